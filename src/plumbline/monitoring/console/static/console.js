// The console's only script: refresh the page's sections without a full reload. A section
// the person is working in (focus inside, or a field with text) is left alone until they
// are done, so a half-written comment is never wiped.
(function () {
  "use strict";
  var main = document.getElementById("main");
  if (!main) { return; }
  var every = Math.max(2, parseFloat(main.getAttribute("data-refresh-s")) || 15) * 1000;
  var stamp = document.getElementById("updated");

  // Busy: focus inside, a field changed from what the page rendered, or details opened.
  function busy(section) {
    if (section.contains(document.activeElement) && document.activeElement !== section) {
      return true;
    }
    var fields = section.querySelectorAll("input, textarea, select");
    for (var i = 0; i < fields.length; i++) {
      var f = fields[i];
      if (f.type === "hidden") { continue; }
      if (f.tagName === "SELECT") {
        for (var k = 0; k < f.options.length; k++) {
          if (f.options[k].selected !== f.options[k].defaultSelected) { return true; }
        }
      } else if (f.type === "checkbox" || f.type === "radio") {
        if (f.checked !== f.defaultChecked) { return true; }
      } else if (f.value !== f.defaultValue) {
        return true;
      }
    }
    return section.querySelectorAll("details[open]").length > 0;
  }

  function refresh() {
    fetch("/console/sections", { credentials: "same-origin", cache: "no-store" })
      .then(function (answer) {
        if (answer.status === 401) { window.location.reload(); return null; }
        if (!answer.ok) { throw new Error("HTTP " + answer.status); }
        return answer.json();
      })
      .then(function (sections) {
        if (!sections) { return; }
        Object.keys(sections).forEach(function (id) {
          var section = document.getElementById(id);
          if (section && !busy(section)) { section.innerHTML = sections[id]; }
        });
        stamp.textContent = "Updated " + new Date().toISOString().slice(11, 19) + " UTC.";
        main.setAttribute("data-refreshed", String(Date.now()));
      })
      .catch(function (err) {
        stamp.textContent = "Not updated: " + err.message + ". Retrying.";
      });
  }

  window.setInterval(refresh, every);
})();
