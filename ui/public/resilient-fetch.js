// Keep the page alive while the Chainlit server restarts.
//
// Chainlit's page treats any failed request to its own server (for example the
// `/user` check it repeats when components mount) as "logged out" and leaves for the
// login page; if the server is restarting at that moment, the tab lands on a browser
// error page and the conversation is lost from view. This wrapper makes requests to
// the page's own origin wait for the server instead: a request that fails because the
// server cannot be reached (fetch rejects with a TypeError) is sent again, with
// backoff, for up to two minutes. Meanwhile Socket.IO reconnects by itself, the
// server resumes the thread (`on_chat_resume`), and the answer goes on.
(function () {
  "use strict";
  var originalFetch = window.fetch.bind(window);
  var GIVE_UP_AFTER_MS = 120000;

  function sameOrigin(input) {
    try {
      var url = typeof input === "string" || input instanceof URL ? input : input.url;
      return new URL(url, window.location.href).origin === window.location.origin;
    } catch (error) {
      return false;
    }
  }

  function sleep(ms) {
    return new Promise(function (resolve) {
      setTimeout(resolve, ms);
    });
  }

  window.fetch = async function resilientFetch(input, init) {
    if (!sameOrigin(input) || (input instanceof Request && init === undefined)) {
      return originalFetch(input, init);
    }
    var started = Date.now();
    var delay = 500;
    for (;;) {
      try {
        return await originalFetch(input, init);
      } catch (error) {
        var aborted = init && init.signal && init.signal.aborted;
        var unreachable = error instanceof TypeError;
        if (aborted || !unreachable || Date.now() - started > GIVE_UP_AFTER_MS) {
          throw error;
        }
        await sleep(delay);
        delay = Math.min(delay * 2, 3000);
      }
    }
  };
})();
