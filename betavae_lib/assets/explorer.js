/* The latent explorer's page side: sliders, model menu, buttons, 2-D pad and canvas around
   BetaVAEDecoder (decoder.js, placed just before this file in the same scope).

   It draws a widget model: anything with get(name), set(name, value), on("change:name", f),
   off("change:name", f) and save_changes(), i.e. anywidget's model. Its state is the synced
   traits of betavae_lib.explorer.LatentExplorer:
     settings  {id, title, span, step, size, threshold}
     models    [{name, decoder, z0, order, kl, active, pad, nbytes, precision, max_error}]
     model     the name of the model shown
     z         its code (one number per latent of that model)
     codes     {name: code}: every model's code, so that each keeps its own while another is shown
   Every change the reader makes is written to the model (set + save_changes): in a live kernel
   Python sees it; in the static book the html-manager's model keeps it. Every redraw follows
   the model's change events, so a change from Python redraws the same way.

   BetaVAEExplorer.render(el, model)  draw into el; returns a function that detaches it
   BetaVAEExplorer.localModel(state)  a model without a kernel: a dict with change events
   BetaVAEExplorer.mount(script, state)  a standalone page (LatentExplorer.save): render a
                                      localModel into the element with id state.id

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

  function median(values) {
    var s = values.slice().sort(function (a, b) { return a - b; });
    var n = s.length;
    return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
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

  function build(root, model) {
    var settings = model.get("settings"), models = model.get("models");
    var span = settings.span;
    var names = models.map(function (m) { return m.name; });
    var decoders = [], rows = [], recent = [];
    var shown = -1, pending = false, detached = false;

    var box = el("div", { class: "bvx" });
    root.textContent = "";
    root.appendChild(box);
    var select = el("select", { class: "bvx-model", "aria-label": "model" });
    models.forEach(function (m, i) {
      select.appendChild(el("option", { value: String(i), text: m.name }));
    });
    var reset = el("button", { type: "button", class: "bvx-reset", text: "reset",
      title: "back to the starting code" });
    var random = el("button", { type: "button", class: "bvx-random", text: "random z ~ N(0, I)",
      title: "draw every latent from the prior" });
    var head = el("div", { class: "bvx-head" });
    if (settings.title) head.appendChild(el("span", { class: "bvx-title", text: settings.title }));
    if (models.length > 1) head.appendChild(el("label", {}, [document.createTextNode("model "), select]));
    head.appendChild(reset);
    head.appendChild(random);

    var canvas = el("canvas", { class: "bvx-image", role: "img", "aria-label": "decoded image" });
    canvas.style.width = canvas.style.height = settings.size + "px";
    var padCanvas = el("canvas", { class: "bvx-pad", width: "150", height: "150" });
    var padLabel = el("div", { class: "bvx-pad-label" });
    var padBox = el("div", { class: "bvx-padbox" }, [padCanvas, padLabel]);
    var view = el("div", { class: "bvx-view" }, [canvas, padBox]);
    var sliders = el("div", { class: "bvx-sliders" });
    var folded = el("details", { class: "bvx-inactive" });
    var foot = el("div", { class: "bvx-foot" });
    var result = el("pre", { class: "bvx-selftest", hidden: "hidden" });
    box.appendChild(head);
    box.appendChild(el("div", { class: "bvx-body" }, [view, el("div", { class: "bvx-controls" }, [sliders, folded])]));
    box.appendChild(foot);
    box.appendChild(result);

    /* ---- the model's state */
    function index() {
      var i = names.indexOf(model.get("model"));
      return i < 0 ? 0 : i;
    }

    /* The code of the model shown (a copy): z, or that model's entry in codes while the two
       traits are changing together and z still has another model's length. */
    function code() {
      var m = models[shown < 0 ? index() : shown], n = m.decoder.latent_dim;
      var z = model.get("z");
      if (!z || z.length !== n) z = (model.get("codes") || {})[m.name];
      if (!z || z.length !== n) z = m.z0;
      return z.slice();
    }

    /* The reader's change: code z for model i (default: the one shown), written to the widget
       model in one message (codes, then model, then z: every handler only schedules a redraw). */
    function write(z, i) {
      var name = names[i === undefined ? shown : i];
      var codes = Object.assign({}, model.get("codes") || {});
      codes[name] = z.slice();
      model.set("codes", codes);
      if (model.get("model") !== name) model.set("model", name);
      model.set("z", z.slice());
      model.save_changes();
    }

    function decoder(i) {
      if (!decoders[i]) {
        decoders[i] = Decoder.load(models[i].decoder);
        decoders[i].decode(models[i].z0); // once untimed: the first run compiles the loops
      }
      return decoders[i];
    }

    /* ---- drawing */
    function sync() {
      pending = false;
      if (detached) return;
      var i = index();
      if (i !== shown) {
        shown = i;
        select.value = String(i);
        buildSliders();
      }
      var z = code();
      rows.forEach(function (row, d) {
        if (!row) return;
        if (parseFloat(row.input.value) !== z[d]) row.input.value = String(z[d]);
        row.out.textContent = fmt(z[d]);
      });
      draw(z);
    }

    function draw(z) {
      var dec = decoder(shown), shape = dec.imageShape;
      var C = shape[0], H = shape[1], W = shape[2];
      var t0 = performance.now();
      var pixels = dec.decode(z);
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
      drawPad(z);
      var m = models[shown];
      foot.className = "bvx-foot";
      foot.textContent = "Decoded in this page from the model's " + m.precision + " weights (" +
        kB(m.nbytes) + ", max pixel error " + m.max_error.toFixed(4) + " vs PyTorch): " +
        median(recent).toFixed(1) + " ms per image.";
    }

    function flush() {
      try {
        sync();
      } catch (e) {
        fail(e);
      }
    }

    function schedule() {
      if (pending || detached) return;
      pending = true;
      (window.requestAnimationFrame || function (f) { return setTimeout(f, 16); })(flush);
    }

    /* ---- controls */
    function setValue(d, value) {
      var z = code();
      z[d] = Math.max(-span, Math.min(span, value));
      write(z);
    }

    function makeRow(m, z, d) {
      var input = el("input", { type: "range", min: String(-span), max: String(span),
        step: String(settings.step), value: String(z[d]), "aria-label": "z" + d });
      var out = el("output", { text: fmt(z[d]) });
      var label = el("span", { class: "bvx-name", text: "z" + d });
      var kl = el("span", { class: "bvx-kl", text: m.kl ? m.kl[d].toFixed(2) + " nats" : "" });
      input.addEventListener("input", function () {
        setValue(d, parseFloat(input.value));
      });
      var row = el("div", { class: "bvx-row" + (m.active[d] ? "" : " bvx-off") }, [label, kl, input, out]);
      rows[d] = { input: input, out: out, row: row };
      return row;
    }

    function buildSliders() {
      var m = models[shown], z = code();
      rows = [];
      sliders.textContent = "";
      folded.textContent = "";
      var off = m.order.filter(function (d) { return !m.active[d]; });
      m.order.forEach(function (d) {
        if (m.active[d]) sliders.appendChild(makeRow(m, z, d));
      });
      folded.style.display = off.length ? "" : "none";
      if (off.length) {
        folded.appendChild(el("summary", { text: off.length + " inactive latent" + (off.length > 1 ? "s" : "") +
          " (KL < " + settings.threshold + " nats): they barely change the image" }));
        off.forEach(function (d) { folded.appendChild(makeRow(m, z, d)); });
      }
      padBox.style.display = m.pad ? "" : "none";
      if (m.pad) padLabel.textContent = "pad: z" + m.pad[0] + " \u2192, z" + m.pad[1] + " \u2191";
    }

    function drawPad(z) {
      var m = models[shown];
      if (!m.pad) return;
      var ctx = padCanvas.getContext("2d"), S = padCanvas.width;
      var style = window.getComputedStyle ? getComputedStyle(box).color : "#444";
      ctx.clearRect(0, 0, S, S);
      ctx.globalAlpha = 0.25;
      ctx.strokeStyle = style;
      ctx.strokeRect(0.5, 0.5, S - 1, S - 1);
      ctx.beginPath();
      ctx.moveTo(S / 2, 0); ctx.lineTo(S / 2, S); ctx.moveTo(0, S / 2); ctx.lineTo(S, S / 2);
      ctx.stroke();
      ctx.globalAlpha = 1;
      var clamp = function (v) { return Math.max(-span, Math.min(span, v)); };
      var x = (clamp(z[m.pad[0]]) / span + 1) / 2 * S;
      var y = (1 - (clamp(z[m.pad[1]]) / span + 1) / 2) * S;
      ctx.fillStyle = "#d62728";
      ctx.beginPath();
      ctx.arc(x, y, 5, 0, 2 * Math.PI);
      ctx.fill();
    }

    function padMove(event) {
      var m = models[shown];
      if (!m.pad) return;
      var rect = padCanvas.getBoundingClientRect();
      var fx = (event.clientX - rect.left) / rect.width, fy = (event.clientY - rect.top) / rect.height;
      var z = code();
      z[m.pad[0]] = Math.max(-span, Math.min(span, (2 * fx - 1) * span));
      z[m.pad[1]] = Math.max(-span, Math.min(span, (1 - 2 * fy) * span));
      write(z);
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
      write((model.get("codes") || {})[names[i]] || models[i].z0, i);
    }
    select.addEventListener("change", function () { choose(parseInt(select.value, 10)); });
    reset.addEventListener("click", function () { write(models[shown].z0); });
    random.addEventListener("click", function () {
      var z = code();
      for (var d = 0; d < z.length; d++) z[d] = randn();
      write(z);
    });

    function fail(error) {
      foot.textContent = "The explorer stopped: " + (error && error.message ? error.message : error);
      foot.className = "bvx-foot bvx-error";
      if (window.console) console.error("betavae explorer:", error);
    }

    model.on("change:z", schedule);
    model.on("change:model", schedule);
    flush();
    return {
      root: box, select: select, rows: function () { return rows; }, canvas: canvas,
      flush: flush, choose: choose, setValue: setValue, decoder: decoder, result: result,
      code: code, shown: function () { return shown; }, models: models, settings: settings,
      detach: function () {
        detached = true;
        model.off("change:z", schedule);
        model.off("change:model", schedule);
      },
    };
  }

  function pixelHash(canvas) {
    var data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    var h = 2166136261;
    for (var i = 0; i < data.length; i++) h = Math.imul(h ^ data[i], 16777619) >>> 0;
    return h;
  }

  /* The hash hooks. The self-test dispatches the same DOM events a reader's input does, then
     redraws at once (flush) instead of waiting for the next frame. */
  function hooks(api, params, model) {
    var models = api.models, span = api.settings.span;
    var start = { model: model.get("model"), z: model.get("z") };
    if (params["bvx-model"]) api.choose(Math.min(parseInt(params["bvx-model"], 10) || 0, models.length - 1));
    if (params["bvx-z"]) {
      params["bvx-z"].split(",").forEach(function (pair) {
        var kv = pair.split(":");
        var d = parseInt(kv[0], 10), v = parseFloat(kv[1]);
        if (d >= 0 && d < api.code().length && isFinite(v)) api.setValue(d, v);
      });
    }
    api.flush();
    if (!("bvx-selftest" in params)) return;
    var out = { id: api.settings.id, models: models.map(function (m) { return m.name; }), start: start };
    try {
      var before = pixelHash(api.canvas);
      var m = models[api.shown()];
      var d = m.order[0], input = api.rows()[d].input;
      var target = parseFloat(input.value) > 0 ? -0.8 * span : 0.8 * span;
      input.value = String(target);
      input.dispatchEvent(new Event("input", { bubbles: true }));
      api.flush();
      var afterSlider = pixelHash(api.canvas);
      out.slider = { latent: d, value: target, state: model.get("z")[d],
        code: (model.get("codes") || {})[m.name][d], changed: afterSlider !== before };
      if (models.length > 1) {
        var next = (api.shown() + 1) % models.length;
        api.select.value = String(next);
        api.select.dispatchEvent(new Event("change", { bubbles: true }));
        api.flush();
        out.model = { chosen: next, name: model.get("model"), changed: pixelHash(api.canvas) !== afterSlider };
      }
      var n = parseInt(params["bvx-timing"] || "0", 10);
      if (n > 0) {
        out.decode_ms = {};
        models.forEach(function (model, i) {
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

  /* Draw the explorer for ``model`` into ``el``; the returned function detaches it (anywidget
     calls it when the view goes away). */
  function render(el, model) {
    var api;
    try {
      api = build(el, model);
      hooks(api, hashParams(), model);
    } catch (e) {
      el.appendChild(document.createElement("div")).textContent = "The explorer could not start: " + e.message;
      el.lastChild.className = "bvx-error";
      if (window.console) console.error("betavae explorer:", e);
    }
    return function () {
      if (api) api.detach();
    };
  }

  /* A widget model without a widget manager: get/set on a copy of ``state``; set fires the
     change:<name> handlers when the value changes; save_changes does nothing (no kernel). */
  function localModel(state) {
    var values = JSON.parse(JSON.stringify(state)), handlers = {};
    return {
      get: function (name) { return values[name]; },
      set: function (name, value) {
        if (JSON.stringify(values[name]) === JSON.stringify(value)) return;
        values[name] = value;
        (handlers["change:" + name] || []).slice().forEach(function (f) { f(); });
      },
      on: function (event, f) { (handlers[event] = handlers[event] || []).push(f); },
      off: function (event, f) {
        handlers[event] = (handlers[event] || []).filter(function (g) { return g !== f; });
      },
      save_changes: function () {},
    };
  }

  /* A standalone page: render a local model into the element with id state.settings.id (the
     element just before ``script`` first: the same page fragment shown twice has the id twice). */
  function mount(script, state, attempt) {
    attempt = attempt || 0;
    var id = state.settings.id;
    var prev = script && script.previousElementSibling;
    var root = prev && prev.id === id ? prev : document.getElementById(id);
    if (!root) {
      // Some front ends run an output's scripts before its HTML is in the document.
      if (attempt < 100) setTimeout(function () { mount(script, state, attempt + 1); }, 50);
      return;
    }
    if (root.getAttribute("data-bvx-mounted")) return;
    root.setAttribute("data-bvx-mounted", "1");
    render(root, localModel(state));
  }

  return { render: render, localModel: localModel, mount: mount };
})(BetaVAEDecoder);
