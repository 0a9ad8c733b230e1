// kundenwert web app: the one small enhancement. Every page works without it; with it a form
// cannot be sent twice by a double click (a second outcome or a second saved list).
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (form.dataset.sent) { event.preventDefault(); return; }
  form.dataset.sent = "1";
  setTimeout(function () { delete form.dataset.sent; }, 3000);
});
