// Loaded after require.js and before embed-amd.js on pages with widgets (see nb_ipywidgets_js in _config.yml).
(function () {
  "use strict";
  // This folder, e.g. ".../_static/vendored/jupyter-widgets/" (works from file:// as well as http).
  var here = document.currentScript.src.replace(/[?#].*$/, "").replace(/[^/]*$/, "");
  // The widget manager loads its fonts relative to its module's URL: point that URL at this folder.
  window.__jupyter_widgets_assets_path__ = here;
  if (window.requirejs) {
    window.requirejs.config({ paths: { "@jupyter-widgets/html-manager/dist": here.slice(0, -1) } });
  }
  // The widgets typeset their labels with MathJax 2's MathJax.Hub.Queue; the book loads MathJax 3.
  // MathJax (a deferred script) is ready before DOMContentLoaded, and widgets render on window load.
  document.addEventListener("DOMContentLoaded", function () {
    var mj = window.MathJax;
    if (!mj || mj.Hub || typeof mj.typesetPromise !== "function") return;
    mj.Hub = {
      Queue: function () {
        Array.prototype.forEach.call(arguments, function (job) {
          var element = Array.isArray(job) && job[0] === "Typeset" ? job[2] : null;
          if (element) {
            mj.startup.promise.then(function () { return mj.typesetPromise([element]); })
              .catch(function (err) { console.warn("MathJax could not typeset a widget label:", err); });
          }
        });
      },
    };
  });
})();
