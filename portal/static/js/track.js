/*
 * Partner Portal first-party tracking helper for the brand's shop.
 *
 * <script src="https://partners.example/static/js/track.js"
 *         data-ref-param="ref" data-click-param="click_id" data-days="30" defer></script>
 *
 * When a page is opened with ?ref=…&click_id=…, both values are kept in
 * first-party cookies (pp_ref, pp_click_id) for the cookie window. A later visit
 * with new values replaces them (the last partner click wins). Read them with
 * PartnerTracking.get() or on the server, and send them with signups and sales.
 */
(function () {
  "use strict";
  var script = document.currentScript || {};
  var data = script.dataset || {};
  var refParam = data.refParam || "ref";
  var clickParam = data.clickParam || "click_id";
  var days = parseInt(data.days || "30", 10);
  var safe = /^[A-Za-z0-9_.:-]{1,128}$/;

  function setCookie(name, value) {
    var expires = new Date(Date.now() + days * 864e5).toUTCString();
    var secure = location.protocol === "https:" ? "; Secure" : "";
    document.cookie = name + "=" + encodeURIComponent(value) + "; expires=" + expires + "; path=/; SameSite=Lax" + secure;
  }

  function getCookie(name) {
    var match = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return match ? decodeURIComponent(match[1]) : null;
  }

  var params = new URLSearchParams(location.search);
  var ref = params.get(refParam);
  var clickId = params.get(clickParam);
  if (ref && safe.test(ref)) {
    setCookie("pp_ref", ref);
    if (clickId && safe.test(clickId)) {
      setCookie("pp_click_id", clickId);
    } else {
      document.cookie = "pp_click_id=; expires=Thu, 01 Jan 1970 00:00:00 GMT; path=/";
    }
  }

  window.PartnerTracking = {
    get: function () {
      return { ref: getCookie("pp_ref"), click_id: getCookie("pp_click_id") };
    },
  };
})();
