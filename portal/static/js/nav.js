/* The navigation's menus (templates/_partials/_nav.html), no framework.
 *
 * Loaded right after the header, before the page is painted: below 56.25rem the role's links
 * fold into the "Menu" disclosure (without scripts it stays open, so every link is still
 * there). A click elsewhere or Escape closes an open menu. htmx runs this again when it swaps
 * the whole body; the page-wide listeners are added once.
 */
(function () {
  "use strict";
  var narrow = window.matchMedia("(max-width: 56.24rem)");

  function fit() {
    var menu = document.querySelector("details.nav-menu");
    if (menu) menu.open = !narrow.matches;
  }

  function closeAll(except) {
    document.querySelectorAll("details.nav-more[open]").forEach(function (group) {
      if (!except || !group.contains(except)) group.open = false;
    });
    var menu = document.querySelector("details.nav-menu");
    if (menu && narrow.matches && menu.open && (!except || !menu.contains(except))) menu.open = false;
  }

  fit();
  if (window.portalNavReady) return;
  window.portalNavReady = true;
  narrow.addEventListener("change", fit);
  document.addEventListener("click", function (event) { closeAll(event.target); });
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") return;
    var open = document.activeElement && document.activeElement.closest("details[open]");
    closeAll(null);
    if (open && !open.open) open.querySelector("summary").focus();
  });
})();
