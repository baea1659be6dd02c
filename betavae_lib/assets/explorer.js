/* The latent explorer's page side: sliders, model menu, buttons, 2-D pad and canvas around
   BetaVAEDecoder (decoder.js, inlined just before this file in the same function scope).

   BetaVAEExplorer.mount(script, config) fills the element with id config.id (written by
   betavae_lib.traversal.live_explorer just before the script). config: {id, title, span, step,
   size, threshold, models: [{name, decoder, z0, order, kl, active, pad, nbytes, precision,
   max_error}]}. Each explorer keeps its state in its own closure: several on a page, or the
   same output rendered twice, do not interact.

   URL hash hooks (for tests and screenshots; ignored otherwise):
     #bvx-model=1&bvx-z=3:2.5,7:-1   every explorer: choose model 1 and set z3, z7
     #bvx-selftest[&bvx-timing=200]  every explorer: drive a slider and the model menu, check the
                                     canvas pixels change, optionally time N decodes per model,
                                     and write the result as JSON into <pre class="bvx-selftest">
*/
var BetaVAEExplorer = (function (Decoder) {
  "use strict";

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (key === "text") node.textContent = attrs[key];
      else node.setAttribute(key, attrs[key]);
    });
    (children || []).forEach(function (child) {
      node.appendChild(child);
    });
    return node;
  }

  function fmt(value) {
    return (value >= 0 ? "+" : "\u2212") + Math.abs(value).toFixed(2);
  }

  function randn() {
    var u = 1 - Math.random(), v = Math.random();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }

  function kB(bytes) {
    return bytes >= 1e6 ? (bytes / 1e6).toFixed(2) + " MB" : Math.round(bytes / 1e3) + " kB";
  }

  function hashParams() {
    var out = {};
    try {
      (window.location.hash || "").replace(/^#/, "").split("&").forEach(function (part) {
        var kv = part.split("=");
        if (kv[0].indexOf("bvx-") === 0) out[kv[0]] = decodeURIComponent(kv[1] || "");
      });
    } catch (e) {
      /* a sandboxed frame may not expose its location: no hooks then */
    }
    return out;
  }

  function build(root, config) {
    var span = config.span, models = config.models;
    var states = models.map(function (m) {
      return m.z0.map(function (v) { return Math.max(-span, Math.min(span, v)); });
    });
    var decoders = [];
    var current = 0, pending = false, rows = [], recent = [];

    root.textContent = "";
    var select = el("select", { class: "bvx-model", "aria-label": "model" });
    models.forEach(function (m, i) {
      select.appendChild(el("option", { value: String(i), text: m.name }));
    });
    var reset = el("button", { type: "button", class: "bvx-reset", text: "reset",
      title: "back to the starting code" });
    var random = el("button", { type: "button", class: "bvx-random", text: "random z ~ N(0, I)",
      title: "draw every latent from the prior" });
    var head = el("div", { class: "bvx-head" });
    if (config.title) head.appendChild(el("span", { class: "bvx-title", text: config.title }));
    if (models.length > 1) head.appendChild(el("label", {}, [document.createTextNode("model "), select]));
    head.appendChild(reset);
    head.appendChild(random);

    var canvas = el("canvas", { class: "bvx-image", role: "img", "aria-label": "decoded image" });
    canvas.style.width = canvas.style.height = config.size + "px";
    var padCanvas = el("canvas", { class: "bvx-pad", width: "150", height: "150" });
    var padLabel = el("div", { class: "bvx-pad-label" });
    var padBox = el("div", { class: "bvx-padbox" }, [padCanvas, padLabel]);
    var view = el("div", { class: "bvx-view" }, [canvas, padBox]);
    var sliders = el("div", { class: "bvx-sliders" });
    var folded = el("details", { class: "bvx-inactive" });
    var foot = el("div", { class: "bvx-foot" });
    var result = el("pre", { class: "bvx-selftest", hidden: "hidden" });
    root.appendChild(head);
    root.appendChild(el("div", { class: "bvx-body" }, [view, el("div", { class: "bvx-controls" }, [sliders, folded])]));
    root.appendChild(foot);
    root.appendChild(result);

    function decoder(i) {
      if (!decoders[i]) {
        decoders[i] = Decoder.load(models[i].decoder);
        decoders[i].decode(states[i]); // once untimed: the first run compiles the loops
      }
      return decoders[i];
    }

    function draw() {
      pending = false;
      var dec = decoder(current), shape = dec.imageShape;
      var C = shape[0], H = shape[1], W = shape[2];
      var t0 = performance.now();
      var pixels = dec.decode(states[current]);
      recent.push(performance.now() - t0);
      if (recent.length > 25) recent.shift();
      if (canvas.width !== W || canvas.height !== H) {
        canvas.width = W;
        canvas.height = H;
      }
      var ctx = canvas.getContext("2d", { willReadFrequently: true });
      var image = ctx.createImageData(W, H), data = image.data, n = H * W;
      for (var i = 0; i < n; i++) {
        var r = pixels[i], g = C === 3 ? pixels[n + i] : r, b = C === 3 ? pixels[2 * n + i] : r;
        data[4 * i] = Math.round(255 * r);
        data[4 * i + 1] = Math.round(255 * g);
        data[4 * i + 2] = Math.round(255 * b);
        data[4 * i + 3] = 255;
      }
      ctx.putImageData(image, 0, 0);
      drawPad();
      var m = models[current];
      foot.textContent = "Decoded in this page from the model's " + m.precision + " weights (" +
        kB(m.nbytes) + ", max pixel error " + m.max_error.toFixed(4) + " vs PyTorch): " +
        median(recent).toFixed(1) + " ms per image.";
    }

    function schedule() {
      if (pending) return;
      pending = true;
      (window.requestAnimationFrame || function (f) { return setTimeout(f, 16); })(function () {
        try {
          draw();
        } catch (e) {
          fail(e);
        }
      });
    }

    function setValue(d, value) {
      value = Math.max(-span, Math.min(span, value));
      states[current][d] = value;
      var row = rows[d];
      if (row) {
        row.input.value = String(value);
        row.out.textContent = fmt(value);
      }
    }

    function makeRow(m, d) {
      var input = el("input", { type: "range", min: String(-span), max: String(span),
        step: String(config.step), value: String(states[current][d]), "aria-label": "z" + d });
      var out = el("output", { text: fmt(states[current][d]) });
      var label = el("span", { class: "bvx-name", text: "z" + d });
      var kl = el("span", { class: "bvx-kl", text: m.kl ? m.kl[d].toFixed(2) + " nats" : "" });
      input.addEventListener("input", function () {
        setValue(d, parseFloat(input.value));
        schedule();
      });
      var row = el("div", { class: "bvx-row" + (m.active[d] ? "" : " bvx-off") }, [label, kl, input, out]);
      rows[d] = { input: input, out: out, row: row };
      return row;
    }

    function buildSliders() {
      var m = models[current];
      rows = [];
      sliders.textContent = "";
      folded.textContent = "";
      var off = m.order.filter(function (d) { return !m.active[d]; });
      m.order.forEach(function (d) {
        if (m.active[d]) sliders.appendChild(makeRow(m, d));
      });
      folded.style.display = off.length ? "" : "none";
      if (off.length) {
        folded.appendChild(el("summary", { text: off.length + " inactive latent" + (off.length > 1 ? "s" : "") +
          " (KL < " + config.threshold + " nats): they barely change the image" }));
        off.forEach(function (d) { folded.appendChild(makeRow(m, d)); });
      }
      padBox.style.display = m.pad ? "" : "none";
      if (m.pad) padLabel.textContent = "pad: z" + m.pad[0] + " \u2192, z" + m.pad[1] + " \u2191";
    }

    function drawPad() {
      var m = models[current];
      if (!m.pad) return;
      var ctx = padCanvas.getContext("2d"), S = padCanvas.width;
      var style = window.getComputedStyle ? getComputedStyle(root).color : "#444";
      ctx.clearRect(0, 0, S, S);
      ctx.globalAlpha = 0.25;
      ctx.strokeStyle = style;
      ctx.strokeRect(0.5, 0.5, S - 1, S - 1);
      ctx.beginPath();
      ctx.moveTo(S / 2, 0); ctx.lineTo(S / 2, S); ctx.moveTo(0, S / 2); ctx.lineTo(S, S / 2);
      ctx.stroke();
      ctx.globalAlpha = 1;
      var x = (states[current][m.pad[0]] / span + 1) / 2 * S;
      var y = (1 - (states[current][m.pad[1]] / span + 1) / 2) * S;
      ctx.fillStyle = "#d62728";
      ctx.beginPath();
      ctx.arc(x, y, 5, 0, 2 * Math.PI);
      ctx.fill();
    }

    function padMove(event) {
      var m = models[current];
      if (!m.pad) return;
      var box = padCanvas.getBoundingClientRect();
      var fx = (event.clientX - box.left) / box.width, fy = (event.clientY - box.top) / box.height;
      setValue(m.pad[0], (2 * fx - 1) * span);
      setValue(m.pad[1], (1 - 2 * fy) * span);
      schedule();
    }
    var dragging = false;
    padCanvas.addEventListener("pointerdown", function (e) {
      dragging = true;
      if (padCanvas.setPointerCapture) padCanvas.setPointerCapture(e.pointerId);
      padMove(e);
      e.preventDefault();
    });
    padCanvas.addEventListener("pointermove", function (e) { if (dragging) padMove(e); });
    padCanvas.addEventListener("pointerup", function () { dragging = false; });
    padCanvas.addEventListener("pointercancel", function () { dragging = false; });

    function choose(i) {
      current = i;
      select.value = String(i);
      buildSliders();
      schedule();
    }
    select.addEventListener("change", function () { choose(parseInt(select.value, 10)); });
    reset.addEventListener("click", function () {
      models[current].z0.forEach(function (v, d) { setValue(d, v); });
      schedule();
    });
    random.addEventListener("click", function () {
      for (var d = 0; d < states[current].length; d++) setValue(d, randn());
      schedule();
    });

    function fail(error) {
      foot.textContent = "The explorer stopped: " + (error && error.message ? error.message : error);
      foot.className = "bvx-foot bvx-error";
      if (window.console) console.error("betavae explorer:", error);
    }

    buildSliders();
    var api = {
      root: root, select: select, rows: function () { return rows; }, canvas: canvas,
      draw: draw, choose: choose, setValue: setValue, decoder: decoder, result: result,
      states: states, config: config, fail: fail,
    };
    return api;
  }

  function pixelHash(canvas) {
    var data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    var h = 2166136261;
    for (var i = 0; i < data.length; i++) h = Math.imul(h ^ data[i], 16777619) >>> 0;
    return h;
  }

  function median(values) {
    var s = values.slice().sort(function (a, b) { return a - b; });
    var n = s.length;
    return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
  }

  /* The hash hooks. The self-test dispatches the same DOM events a reader's input does. */
  function hooks(api, params) {
    var config = api.config, span = config.span;
    if (params["bvx-model"]) api.choose(Math.min(parseInt(params["bvx-model"], 10) || 0, config.models.length - 1));
    if (params["bvx-z"]) {
      params["bvx-z"].split(",").forEach(function (pair) {
        var kv = pair.split(":");
        var d = parseInt(kv[0], 10), v = parseFloat(kv[1]);
        if (d >= 0 && d < api.states[0].length && isFinite(v)) api.setValue(d, v);
      });
    }
    api.draw();
    if (!("bvx-selftest" in params)) return;
    var out = { id: config.id, models: config.models.map(function (m) { return m.name; }) };
    try {
      var before = pixelHash(api.canvas);
      var m = config.models[parseInt(api.select.value, 10) || 0];
      var d = m.order[0], input = api.rows()[d].input;
      var target = parseFloat(input.value) > 0 ? -0.8 * span : 0.8 * span;
      input.value = String(target);
      input.dispatchEvent(new Event("input", { bubbles: true }));
      api.draw();
      var afterSlider = pixelHash(api.canvas);
      out.slider = { latent: d, value: target, state: api.states[parseInt(api.select.value, 10) || 0][d],
        changed: afterSlider !== before };
      if (config.models.length > 1) {
        var next = (parseInt(api.select.value, 10) + 1) % config.models.length;
        api.select.value = String(next);
        api.select.dispatchEvent(new Event("change", { bubbles: true }));
        api.draw();
        out.model = { chosen: next, changed: pixelHash(api.canvas) !== afterSlider };
      }
      var n = parseInt(params["bvx-timing"] || "0", 10);
      if (n > 0) {
        out.decode_ms = {};
        config.models.forEach(function (model, i) {
          var dec = api.decoder(i), times = [], z = new Array(dec.latentDim);
          dec.decode(z.fill(0));
          var start = performance.now();
          for (var k = 0; k < n; k++) {
            for (var j = 0; j < z.length; j++) z[j] = randn();
            var t0 = performance.now();
            dec.decode(z);
            times.push(performance.now() - t0);
          }
          out.decode_ms[model.name] = { median: median(times), mean: (performance.now() - start) / n,
            min: Math.min.apply(null, times), n: n };
        });
      }
      out.ok = true;
    } catch (e) {
      out.ok = false;
      out.error = String(e && e.stack ? e.stack : e);
    }
    api.result.textContent = JSON.stringify(out);
  }

  function mount(script, config, attempt) {
    attempt = attempt || 0;
    // The element just before this script first: the same output shown twice (two views of
    // one notebook) has the same id twice, and each copy mounts its own.
    var prev = script && script.previousElementSibling;
    var root = prev && prev.id === config.id ? prev : document.getElementById(config.id);
    if (!root) {
      // Some front ends run an output's scripts before its HTML is in the document.
      if (attempt < 100) setTimeout(function () { mount(script, config, attempt + 1); }, 50);
      return;
    }
    if (root.getAttribute("data-bvx-mounted")) return;
    root.setAttribute("data-bvx-mounted", "1");
    try {
      var api = build(root, config);
      hooks(api, hashParams());
    } catch (e) {
      root.appendChild(el("div", { class: "bvx-error", text: "The explorer could not start: " + e.message }));
      if (window.console) console.error("betavae explorer:", e);
    }
  }

  return { mount: mount };
})(BetaVAEDecoder);
