// visionzoo companion site: click a header of a table.sortable to sort its rows by that
// column (again to reverse). A cell's data-sort attribute, when present, is the value sorted
// on (exact counts behind "11.69M"); columns whose header says data-type="number" compare as
// numbers, the others as text with digits compared by value (resnet18 < resnet101).
"use strict";
(function () {
  function key(cell, numeric) {
    var raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent.trim();
    return numeric ? parseFloat(raw) : raw.toLowerCase();
  }
  function sortBy(table, th, col) {
    var numeric = th.getAttribute("data-type") === "number";
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    Array.prototype.forEach.call(th.parentNode.cells, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[col], numeric), y = key(b.cells[col], numeric);
      var c = numeric ? x - y : x.localeCompare(y, undefined, { numeric: true });
      return ascending ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.addEventListener("click", function () { sortBy(table, th, col); });
    });
  });
})();
