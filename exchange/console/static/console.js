// The console's only script (served from the package; the CSP allows no other).
// It tells the console the browser's time zone, so dates are shown in the user's zone, and
// makes "/" jump to the search box. It never touches record content.
(function () {
  "use strict";
  var root = document.documentElement;
  var zone = "";
  try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (e) { zone = ""; }
  if (zone && root.getAttribute("data-tz-source") !== "profile") {
    document.cookie = "exchange_tz=" + encodeURIComponent(zone) + "; path=/; SameSite=Strict";
    // Shown in another zone than the browser's: show this page again, once, in the right one.
    if (root.getAttribute("data-tz") !== zone && root.getAttribute("data-reloadable") === "yes" &&
        !window.sessionStorage.getItem("exchange_tz_reloaded")) {
      window.sessionStorage.setItem("exchange_tz_reloaded", "1");
      window.location.reload();
    }
  }
  document.addEventListener("keydown", function (event) {
    var target = event.target;
    var typing = target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.tagName === "SELECT");
    if (event.key === "/" && !typing) {
      var box = document.getElementById("search-text");
      if (box) { event.preventDefault(); box.focus(); }
    }
  });
  var summary = document.getElementById("error-summary");
  if (summary) { summary.focus(); }
})();
