/* A VAE decoder in plain JavaScript, run from weights serialised by betavae_lib.jsdecoder.

   BetaVAEDecoder.load(spec) takes the JSON object that jsdecoder.serialise_decoder writes
   ({format: "betavae-decoder", version: 1, latent_dim, image_shape, layers: [...]}) and
   returns {latentDim, imageShape, decode(z) -> Float32Array}: z holds latent_dim numbers,
   the result C*H*W pixel means in [0, 1] in (C, H, W) order, i.e. sigmoid(decoder logits).

   Layers: linear, conv_transpose2d, relu, tanh, sigmoid, flatten, unflatten. Weights are int8 with
   float32 scales per block of an output channel, float16 or float32; biases float32; base64,
   little-endian. No dependencies and no globals: inlined into a page inside a function, the
   name below stays local; under Node (tests) it is module.exports.
*/
var BetaVAEDecoder = (function () {
  "use strict";

  var FORMAT = "betavae-decoder";
  var VERSION = 1;

  function bytesFromBase64(text) {
    var binary;
    if (typeof atob === "function") {
      binary = atob(text);
    } else if (typeof Buffer !== "undefined") {
      binary = Buffer.from(text, "base64").toString("binary");
    } else {
      throw new Error("no base64 decoder (atob) in this JavaScript engine");
    }
    var out = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
    return out;
  }

  function halfToFloat(h) {
    var sign = h & 0x8000 ? -1 : 1;
    var exponent = (h >> 10) & 0x1f;
    var fraction = h & 0x03ff;
    if (exponent === 0) return sign * fraction * Math.pow(2, -24);
    if (exponent === 31) return fraction ? NaN : sign * Infinity;
    return sign * (1 + fraction / 1024) * Math.pow(2, exponent - 15);
  }

  function float32s(text, count) {
    var bytes = bytesFromBase64(text);
    if (bytes.length !== 4 * count) {
      throw new Error("expected " + count + " float32 values, got " + bytes.length + " bytes");
    }
    var view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    var out = new Float32Array(count);
    for (var i = 0; i < count; i++) out[i] = view.getFloat32(4 * i, true);
    return out;
  }

  function product(shape) {
    var n = 1;
    for (var i = 0; i < shape.length; i++) n *= shape[i];
    return n;
  }

  /* A weight tensor as float32 in its stored (row-major) order. int8: the weights of each
     output channel (the slice along ``axis``, in memory order) come in blocks of ``block``,
     each with one float32 scale. */
  function tensor(w) {
    var n = product(w.shape);
    var out = new Float32Array(n);
    var bytes, i;
    if (w.dtype === "float32") return float32s(w.data, n);
    bytes = bytesFromBase64(w.data);
    if (w.dtype === "float16") {
      if (bytes.length !== 2 * n) throw new Error("float16 tensor: wrong byte count");
      for (i = 0; i < n; i++) out[i] = halfToFloat(bytes[2 * i] | (bytes[2 * i + 1] << 8));
      return out;
    }
    if (w.dtype === "int8") {
      if (bytes.length !== n) throw new Error("int8 tensor: wrong byte count");
      var channels = w.shape[w.axis], inner = product(w.shape.slice(w.axis + 1));
      var perChannel = n / channels, blocks = Math.ceil(perChannel / w.block);
      var scale = float32s(w.scale, channels * blocks);
      for (i = 0; i < n; i++) {
        var q = bytes[i] > 127 ? bytes[i] - 256 : bytes[i];
        var c = Math.floor(i / inner) % channels;
        var r = Math.floor(i / (channels * inner)) * inner + (i % inner); // index within channel
        out[i] = q * scale[c * blocks + Math.floor(r / w.block)];
      }
      return out;
    }
    throw new Error("unknown weight dtype " + w.dtype);
  }

  function linear(spec) {
    var nIn = spec["in"], nOut = spec.out;
    var w = tensor(spec.weight);
    var b = spec.bias ? float32s(spec.bias, nOut) : new Float32Array(nOut);
    return function (x) {
      var y = new Float32Array(nOut);
      for (var o = 0; o < nOut; o++) {
        var sum = b[o], row = o * nIn;
        for (var i = 0; i < nIn; i++) sum += w[row + i] * x[i];
        y[o] = sum;
      }
      return y;
    };
  }

  /* Transposed convolution on a (C, H, W) input. The weights are rearranged once to
     [ky][kx][cout][cin], so each kernel tap is a small matrix applied to the channel vector of
     one input pixel; the input is read channels-last and the output written (C, H, W). */
  function convTranspose2d(spec) {
    var cin = spec.in_channels, cout = spec.out_channels, k = spec.kernel;
    var s = spec.stride, p = spec.padding;
    var H = spec.input_shape[1], W = spec.input_shape[2];
    var OH = spec.output_shape[1], OW = spec.output_shape[2];
    var raw = tensor(spec.weight); // (cin, cout, k, k)
    var w = new Float32Array(raw.length);
    for (var ci = 0; ci < cin; ci++)
      for (var co = 0; co < cout; co++)
        for (var ky = 0; ky < k; ky++)
          for (var kx = 0; kx < k; kx++)
            w[((ky * k + kx) * cout + co) * cin + ci] = raw[((ci * cout + co) * k + ky) * k + kx];
    var b = spec.bias ? float32s(spec.bias, cout) : new Float32Array(cout);
    var plane = OH * OW;
    return function (x) {
      var xs = new Float32Array(cin * H * W); // channels-last copy of the input
      var iy, ix, c;
      for (c = 0; c < cin; c++)
        for (iy = 0; iy < H * W; iy++) xs[iy * cin + c] = x[c * H * W + iy];
      var y = new Float32Array(cout * plane);
      for (c = 0; c < cout; c++) y.fill(b[c], c * plane, (c + 1) * plane);
      for (iy = 0; iy < H; iy++) {
        for (ix = 0; ix < W; ix++) {
          var xo = (iy * W + ix) * cin;
          for (var ty = 0; ty < k; ty++) {
            var oy = iy * s - p + ty;
            if (oy < 0 || oy >= OH) continue;
            for (var tx = 0; tx < k; tx++) {
              var ox = ix * s - p + tx;
              if (ox < 0 || ox >= OW) continue;
              var wo = (ty * k + tx) * cout * cin, yo = oy * OW + ox;
              for (var o = 0; o < cout; o++) {
                var sum = 0, wr = wo + o * cin;
                for (var i = 0; i < cin; i++) sum += w[wr + i] * xs[xo + i];
                y[o * plane + yo] += sum;
              }
            }
          }
        }
      }
      return y;
    };
  }

  function relu(x) {
    for (var i = 0; i < x.length; i++) if (x[i] < 0) x[i] = 0;
    return x;
  }

  function tanh(x) {
    for (var i = 0; i < x.length; i++) x[i] = Math.tanh(x[i]);
    return x;
  }

  function sigmoid(x) {
    for (var i = 0; i < x.length; i++) x[i] = 1 / (1 + Math.exp(-x[i]));
    return x;
  }

  function identity(x) {
    return x;
  }

  var BUILDERS = {
    linear: linear,
    conv_transpose2d: convTranspose2d,
    relu: function () { return relu; },
    tanh: function () { return tanh; },
    sigmoid: function () { return sigmoid; },
    flatten: function () { return identity; },
    unflatten: function () { return identity; },
  };

  function load(spec) {
    if (!spec || spec.format !== FORMAT) throw new Error("not a " + FORMAT + " object");
    if (spec.version !== VERSION) {
      throw new Error(FORMAT + " version " + spec.version + " (this decoder reads " + VERSION + ")");
    }
    var steps = spec.layers.map(function (layer) {
      var build = BUILDERS[layer.type];
      if (!build) throw new Error("unknown layer type " + layer.type);
      return build(layer);
    });
    var latentDim = spec.latent_dim;
    var size = product(spec.image_shape);
    return {
      latentDim: latentDim,
      imageShape: spec.image_shape.slice(),
      /* z (latent_dim numbers) -> Float32Array (C*H*W) of pixel means in [0, 1]. */
      decode: function (z) {
        if (z.length !== latentDim) {
          throw new Error("z must hold " + latentDim + " numbers, got " + z.length);
        }
        var x = Float32Array.from(z);
        for (var i = 0; i < steps.length; i++) x = steps[i](x);
        if (x.length !== size) throw new Error("decoder produced " + x.length + " values");
        return sigmoid(x);
      },
    };
  }

  return { load: load, bytesFromBase64: bytesFromBase64, halfToFloat: halfToFloat, FORMAT: FORMAT, VERSION: VERSION };
})();

if (typeof module !== "undefined" && module && module.exports) module.exports = BetaVAEDecoder;
