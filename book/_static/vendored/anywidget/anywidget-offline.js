// Loaded after require.js and before embed-amd.js on pages with widgets (see nb_ipywidgets_js in _config.yml).
// The html-manager asks require.js for the module "anywidget" before it falls back to a CDN: point that
// name at the vendored AMD build next to this file (index.js), so that the book's widgets render offline.
(function () {
  "use strict";
  var here = document.currentScript.src.replace(/[?#].*$/, "").replace(/[^/]*$/, "");
  if (window.requirejs) window.requirejs.config({ paths: { anywidget: here + "index" } });
})();
