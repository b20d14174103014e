// Recovery codes page: copy the codes to the clipboard, or print them. The download works
// without JavaScript (a form); these two buttons show only when they can work.
(function () {
  "use strict";
  var list = document.getElementById("recovery-codes");
  var copy = document.getElementById("copy-codes");
  var print = document.getElementById("print-codes");
  var status = document.getElementById("copy-status");
  if (!list) { return; }
  function codes() {
    return Array.prototype.map.call(list.querySelectorAll("code"), function (c) {
      return c.textContent;
    }).join("\n");
  }
  if (copy && navigator.clipboard && navigator.clipboard.writeText) {
    copy.hidden = false;
    copy.addEventListener("click", function () {
      navigator.clipboard.writeText(codes() + "\n").then(function () {
        status.textContent = "Copied the codes. Paste them into your password manager.";
      }, function () {
        status.textContent = "Your browser did not let us copy: select the codes and copy them.";
      });
    });
  }
  if (print && window.print) {
    print.hidden = false;
    print.addEventListener("click", function () { window.print(); });
  }
}());
