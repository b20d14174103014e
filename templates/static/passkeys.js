// Staff console: passkeys and security keys (WebAuthn). A button asks the server for the
// ceremony's options, lets the browser talk to the authenticator, puts the answer in a hidden
// field of its form and submits that form; the server checks everything. Without JavaScript or
// WebAuthn the buttons stay hidden and typed codes still work.
(function () {
  "use strict";
  if (!window.PublicKeyCredential || !window.fetch || !navigator.credentials) { return; }

  function toBytes(text) {
    var b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4) { b64 += "="; }
    var raw = atob(b64);
    var out = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) { out[i] = raw.charCodeAt(i); }
    return out.buffer;
  }

  function toText(buffer) {
    if (!buffer) { return null; }
    var bytes = new Uint8Array(buffer);
    var raw = "";
    for (var i = 0; i < bytes.length; i++) { raw += String.fromCharCode(bytes[i]); }
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function ids(list) {
    return (list || []).map(function (c) {
      var copy = Object.assign({}, c);
      copy.id = toBytes(c.id);
      return copy;
    });
  }

  function options(button) {
    var form = button.form;
    var body = new FormData();
    body.append("csrf_token", form.elements.csrf_token.value);
    return fetch(button.getAttribute("data-options-url"), {
      method: "POST", body: body, credentials: "same-origin",
      headers: { Accept: "application/json" }
    }).then(function (r) {
      return r.json().then(function (data) {
        if (!r.ok) { throw new Error(data.error || "The server did not answer. Try again."); }
        return data;
      });
    });
  }

  // The credential as JSON, binary fields in base64url, as the server's library reads it.
  function asJSON(c, response) {
    response.clientDataJSON = toText(c.response.clientDataJSON);
    return {
      id: c.id, rawId: toText(c.rawId), type: c.type,
      authenticatorAttachment: c.authenticatorAttachment || null,
      clientExtensionResults: c.getClientExtensionResults(),
      response: response
    };
  }

  function register(opts) {
    opts.challenge = toBytes(opts.challenge);
    opts.user.id = toBytes(opts.user.id);
    opts.excludeCredentials = ids(opts.excludeCredentials);
    return navigator.credentials.create({ publicKey: opts }).then(function (c) {
      return asJSON(c, {
        attestationObject: toText(c.response.attestationObject),
        transports: c.response.getTransports ? c.response.getTransports() : []
      });
    });
  }

  function prove(opts) {
    opts.challenge = toBytes(opts.challenge);
    opts.allowCredentials = ids(opts.allowCredentials);
    return navigator.credentials.get({ publicKey: opts }).then(function (c) {
      return asJSON(c, {
        authenticatorData: toText(c.response.authenticatorData),
        signature: toText(c.response.signature),
        userHandle: toText(c.response.userHandle)
      });
    });
  }

  document.querySelectorAll("[data-passkey-box]").forEach(function (box) {
    box.hidden = false;
  });
  document.querySelectorAll("button[data-passkey]").forEach(function (button) {
    button.addEventListener("click", function () {
      var form = button.form;
      var kind = button.getAttribute("data-passkey");
      var error = form.querySelector("[data-passkey-error]");
      error.textContent = "";
      button.disabled = true;
      options(button)
        .then(kind === "register" ? register : prove)
        .then(function (answer) {
          var field = kind === "register" ? "registration" : "credential";
          form.elements[field].value = JSON.stringify(answer);
          form.submit();
        })
        .catch(function (e) {
          button.disabled = false;
          error.textContent = (e && e.name === "NotAllowedError")
            ? "The passkey was not used (cancelled or timed out). Try again."
            : (e && e.message) || "That did not work. Try again.";
        });
    });
  });
})();
