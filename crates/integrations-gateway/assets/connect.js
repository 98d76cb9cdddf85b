/*
 * integrations: connect an end user's account from a product's page.
 *
 *   <script src="https://GATEWAY/connect.js"></script>
 *   const { account, status } = await Integrations.connect({ sessionUrl });
 *
 * `sessionUrl` is the `connect_url` of a connect session your backend made
 * (POST /v1/connect-sessions, with this page's origin in `allowed_origins`).
 * It opens in a popup; call `connect` from a click handler, or browsers
 * block the popup. The promise rejects with an Error whose `code` is
 * `popup_blocked`, `popup_closed` (closed before an account was connected),
 * `connect_failed` (the gateway does not confirm the popup's message) or
 * `invalid_session_url`. No iframe is used.
 */
(function (global) {
  "use strict";

  var SOURCE = "integrations-connect";

  function failure(code, message) {
    var error = new Error(message);
    error.code = code;
    return error;
  }

  function connect(options) {
    return new Promise(function (resolve, reject) {
      var url;
      try {
        url = new URL(options && options.sessionUrl);
      } catch (invalid) {
        reject(failure("invalid_session_url", "sessionUrl must be the connect_url of a connect session"));
        return;
      }
      var token;
      try {
        token = decodeURIComponent(url.hash.slice(1));
      } catch (malformed) {
        token = "";
      }
      if (!/\/connect\/session$/.test(url.pathname) || !token) {
        reject(failure("invalid_session_url", "sessionUrl must be the connect_url of a connect session"));
        return;
      }
      var origin = url.origin;
      var api = origin + url.pathname.replace(/\/connect\/session$/, "") + "/v1/connect/session";
      var width = 480;
      var height = 680;
      var left = Math.max(0, (global.screenX || 0) + ((global.outerWidth || width) - width) / 2);
      var top = Math.max(0, (global.screenY || 0) + ((global.outerHeight || height) - height) / 2);
      // A name of its own: no other document can find this window by name
      // and send it elsewhere; the connect page knows it was opened here.
      var name = "integrations-connect-" + Array.prototype.map.call(
        global.crypto.getRandomValues(new Uint8Array(12)), function (byte) { return byte.toString(16); }).join("");
      var popup = global.open(url.href, name,
        "popup=yes,width=" + width + ",height=" + height + ",left=" + Math.round(left) + ",top=" + Math.round(top));
      if (!popup || popup.closed) {
        reject(failure("popup_blocked", "the browser blocked the connect popup: call connect() from a click"));
        return;
      }
      var settled = false;

      function settle(outcome, error) {
        if (settled) return;
        settled = true;
        global.removeEventListener("message", onMessage);
        clearInterval(watch);
        if (error) reject(error);
        else resolve(outcome);
      }

      // What the session says, when the gateway answers: the outcome as
      // stored, not as told.
      function sessionOutcome() {
        return fetch(api, { headers: { authorization: "Bearer " + token } })
          .then(function (response) { return response.ok ? response.json() : null; })
          .catch(function () { return null; });
      }

      function onMessage(event) {
        if (event.origin !== origin || event.source !== popup) return;
        var data = event.data;
        if (!data || data.source !== SOURCE || typeof data.account !== "string") return;
        sessionOutcome().then(function (session) {
          if (session && (session.status !== "completed" || session.account !== data.account)) {
            settle(null, failure("connect_failed", "the gateway does not confirm the connection"));
          } else {
            settle({ account: data.account, status: (session && session.account_status) || data.status });
          }
        });
      }

      // Closed without a message: the end user closed it, or the provider's
      // page cut the popup from this window. The session says which.
      function onClosed() {
        sessionOutcome()
          .then(function (session) {
            if (session && session.status === "completed") {
              settle({ account: session.account, status: session.account_status || "connected" });
            } else {
              settle(null, failure("popup_closed", "the connect popup was closed before an account was connected"));
            }
          });
      }

      global.addEventListener("message", onMessage);
      var watch = setInterval(function () {
        if (popup.closed) {
          clearInterval(watch);
          // A message posted just before closing arrives first.
          setTimeout(onClosed, 200);
        }
      }, 400);
    });
  }

  global.Integrations = Object.assign(global.Integrations || {}, { connect: connect });
})(window);
