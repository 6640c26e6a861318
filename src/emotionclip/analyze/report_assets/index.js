// Batch overview: click a column heading to sort by it (again to reverse).
(function () {
  const table = document.getElementById("videos");
  if (!table) return;
  table.querySelectorAll("th[data-type]").forEach(function (th) {
    th.addEventListener("click", function () {
      const col = th.cellIndex, numeric = th.dataset.type === "number";
      const dir = th.dataset.dir === "asc" ? -1 : 1;
      table.querySelectorAll("th").forEach(function (h) { delete h.dataset.dir; });
      th.dataset.dir = dir > 0 ? "asc" : "desc";
      const body = table.tBodies[0];
      const key = function (row) {
        const cell = row.cells[col], v = cell.dataset.sort !== undefined ? cell.dataset.sort : cell.textContent;
        return numeric ? parseFloat(v) : v.toLowerCase();
      };
      Array.from(body.rows)
        .sort(function (a, b) { const x = key(a), y = key(b); return (x < y ? -1 : x > y ? 1 : 0) * dir; })
        .forEach(function (row) { body.appendChild(row); });
    });
  });
})();
