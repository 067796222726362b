/* Sign a prescription payload in the browser with the doctor's Ed25519 key (WebCrypto).
   The key file is read locally and never sent: its input has no name and sits outside the form. */
(function () {
  "use strict";

  function b64ToBytes(b64) {
    var bin = atob(b64.replace(/\s+/g, ""));
    var out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  function bytesToB64(bytes) {
    var bin = "";
    var arr = new Uint8Array(bytes);
    for (var i = 0; i < arr.length; i++) bin += String.fromCharCode(arr[i]);
    return btoa(bin);
  }

  // The messages come from the page (data-msg-* on the sign box), in the page's language; the
  // English here is only the fallback.
  var messages = {};
  function msg(key, fallback) { return messages[key] || fallback; }

  // Accept PKCS#8 as PEM ("-----BEGIN PRIVATE KEY-----") or as raw DER bytes.
  function pkcs8Der(buffer) {
    var bytes = new Uint8Array(buffer);
    var text = "";
    try { text = new TextDecoder("ascii", { fatal: false }).decode(bytes); } catch (e) { text = ""; }
    if (text.indexOf("-----BEGIN") !== -1) {
      if (text.indexOf("ENCRYPTED") !== -1) {
        throw new Error(msg("encrypted", "This key file is password-protected; use the command line to sign."));
      }
      var m = text.match(/-----BEGIN PRIVATE KEY-----([\s\S]+?)-----END PRIVATE KEY-----/);
      if (!m) throw new Error(msg("notPkcs8", "This file is not a PKCS#8 private key (BEGIN PRIVATE KEY)."));
      return b64ToBytes(m[1]);
    }
    return bytes;
  }

  function setStatus(el, text, ok) {
    el.textContent = text;
    el.className = "notice " + (ok ? "notice--ok" : "notice--error");
    el.hidden = false;
  }

  function setup(box) {
    messages = {
      encrypted: box.getAttribute("data-msg-encrypted"),
      notPkcs8: box.getAttribute("data-msg-not-pkcs8"),
      insecure: box.getAttribute("data-msg-insecure"),
      choose: box.getAttribute("data-msg-choose"),
      signed: box.getAttribute("data-msg-signed"),
      unsupported: box.getAttribute("data-msg-unsupported"),
      unusable: box.getAttribute("data-msg-unusable")
    };
    var fileInput = box.querySelector("input[type=file]");
    var button = box.querySelector("[data-sign-button]");
    var status = box.querySelector("[data-sign-status]");
    var form = document.getElementById(box.getAttribute("data-form"));
    var payload = form.querySelector("[name=payload]").value;
    var signatureField = form.querySelector("[name=signature]");

    if (!window.isSecureContext || !window.crypto || !window.crypto.subtle) {
      setStatus(status, msg("insecure", "Signing in the browser needs a secure (HTTPS) connection. Use the command line below instead."), false);
      button.disabled = true;
      return;
    }
    button.disabled = false;
    button.addEventListener("click", function () {
      var file = fileInput.files && fileInput.files[0];
      if (!file) {
        setStatus(status, msg("choose", "Choose your private key file first."), false);
        fileInput.focus();
        return;
      }
      file.arrayBuffer()
        .then(function (buffer) {
          return window.crypto.subtle.importKey("pkcs8", pkcs8Der(buffer), { name: "Ed25519" }, false, ["sign"]);
        })
        .then(function (key) {
          return window.crypto.subtle.sign({ name: "Ed25519" }, key, b64ToBytes(payload));
        })
        .then(function (signature) {
          signatureField.value = bytesToB64(signature);
          fileInput.value = "";
          setStatus(status, msg("signed", "Signed in this browser. Check the prescription, then press “Issue prescription”."), true);
          var submit = form.querySelector("button[type=submit]");
          if (submit) submit.focus();
        })
        .catch(function (err) {
          var text = err && err.name === "NotSupportedError"
            ? msg("unsupported", "This browser cannot sign with Ed25519 keys. Use the command line below instead.")
            : (err && err.message && err.name === "Error" ? err.message
              : msg("unusable", "The key could not be used: it must be an unencrypted Ed25519 PKCS#8 key."));
          setStatus(status, text, false);
        });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var boxes = document.querySelectorAll("[data-sign-box]");
    for (var i = 0; i < boxes.length; i++) setup(boxes[i]);
  });
})();
