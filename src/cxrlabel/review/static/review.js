// Keys a, b, t, s press the matching button, except while typing a comment.
"use strict";
(function () {
  const form = document.getElementById("judgement");
  if (!form) return;
  const keys = { a: "choose-a", b: "choose-b", t: "choose-tie", s: "choose-skip" };
  let sent = false;
  form.addEventListener("submit", function (event) {
    if (sent) event.preventDefault(); // one judgement per page, however fast the keys
    sent = true;
  });
  document.addEventListener("keydown", function (event) {
    const typing = event.target.closest && event.target.closest("textarea, input");
    if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
    const id = keys[event.key.toLowerCase()];
    if (!id) return;
    event.preventDefault();
    form.requestSubmit(document.getElementById(id));
  });
})();
