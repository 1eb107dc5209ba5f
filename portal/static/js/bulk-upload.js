/*
 * Bulk banner upload with a progress bar. Without this script the form posts
 * every file at once and the page lists the results; with it, each file goes
 * in its own request (so one bad file or a dropped connection costs only that
 * file) and the server answers with the result lines to append.
 */
(function () {
  "use strict";
  var form = document.querySelector("form[data-bulk-upload]");
  if (!form || !window.FormData || !window.XMLHttpRequest) return;

  var input = form.querySelector("input[type=file]");
  var results = document.getElementById("bulk-results");
  var box = document.getElementById("bulk-progress");
  var bar = document.getElementById("bulk-progress-bar");
  var label = document.getElementById("bulk-progress-label");
  var button = form.querySelector("button[type=submit]");
  var maxFiles = parseInt(form.dataset.maxFiles, 10);
  var maxBytes = parseInt(form.dataset.maxBytes, 10);

  function fill(template, values) {
    return template.replace(/\{(\w+)\}/g, function (_, key) { return values[key]; });
  }

  function refusal(text) {
    var item = document.createElement("li");
    item.className = "bulk-result bulk-refused";
    item.dataset.outcome = "refused";
    var badge = document.createElement("span");
    badge.className = "badge badge-bad";
    badge.innerHTML = '<span aria-hidden="true">✖</span> ';
    badge.appendChild(document.createTextNode(form.dataset.labelRefused || "refused"));
    item.appendChild(badge);
    item.appendChild(document.createTextNode(" " + text));
    results.appendChild(item);
  }

  function send(file, onProgress) {
    return new Promise(function (resolve) {
      var data = new FormData(form);
      data.delete(input.name);
      data.append(input.name, file, file.name);
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.action || window.location.href);
      xhr.setRequestHeader("HX-Request", "true");
      xhr.upload.onprogress = function (event) {
        if (event.lengthComputable) onProgress(event.loaded / event.total);
      };
      xhr.onload = function () {
        if (xhr.status === 200 || xhr.status === 422) {
          results.insertAdjacentHTML("beforeend", xhr.responseText);
        } else {
          refusal(fill(form.dataset.labelFailed, { name: file.name }));
        }
        resolve();
      };
      xhr.onerror = function () {
        refusal(fill(form.dataset.labelFailed, { name: file.name }));
        resolve();
      };
      xhr.send(data);
    });
  }

  form.addEventListener("submit", function (event) {
    var files = Array.prototype.slice.call(input.files || []);
    if (!files.length) return; // let the server say that a file is needed
    event.preventDefault();
    if (files.length > maxFiles) {
      refusal(form.dataset.labelTooMany);
      return;
    }
    var total = files.length;
    var done = 0;
    var savedBefore = results.querySelectorAll("[data-outcome=saved]").length;
    button.disabled = true;
    box.hidden = false;
    bar.value = 0;
    label.textContent = fill(form.dataset.labelProgress, { done: 1, total: total });

    var chain = Promise.resolve();
    files.forEach(function (file, index) {
      chain = chain.then(function () {
        label.textContent = fill(form.dataset.labelProgress, { done: index + 1, total: total });
        if (file.size > maxBytes) {
          refusal(fill(form.dataset.labelTooLarge, { name: file.name }));
          return null;
        }
        return send(file, function (share) {
          bar.value = Math.round(((index + share) / total) * 100);
        });
      }).then(function () {
        done += 1;
        bar.value = Math.round((done / total) * 100);
      });
    });
    chain.then(function () {
      var saved = results.querySelectorAll("[data-outcome=saved]").length - savedBefore;
      label.textContent = fill(form.dataset.labelDone, { done: saved, total: total });
      button.disabled = false;
      input.value = "";
      form.dispatchEvent(new CustomEvent("bulk-upload:done", { bubbles: true }));
    });
  });
})();
