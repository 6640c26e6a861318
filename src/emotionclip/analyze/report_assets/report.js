// EmotionCLIP report: the video, the emotion timeline under it, the subject boxes over it.
// Plain SVG + DOM, no library, nothing fetched: the data sits in <script id="report-data">.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const video = document.getElementById("video");
  const canvas = document.getElementById("boxes");
  const timeline = document.getElementById("timeline");
  const tooltip = document.getElementById("tooltip");
  const SVG = "http://www.w3.org/2000/svg";
  const PAD = 44, BAND = 20, TOP = 28, CURVES = 140, AXIS = 22, LANE = 36;
  // per person (analyze --per-person): one lane each under the time axis
  const persons = data.persons || [];
  const LANES = TOP + CURVES + AXIS + 4;
  const HEIGHT = LANES + persons.length * LANE;
  const wins = data.windows, classes = data.classes, colors = data.colors;
  const rowsOf = persons.map(function (p) {  // window index -> the person's row there
    const m = {};
    p.rows.forEach(function (r) { m[r.window] = r; });
    return m;
  });
  const D = Math.max(data.duration, 1e-6);
  const centres = wins.map(function (w) { return (w.start + w.end) / 2; });
  // window i owns the time closest to its centre: band segments end halfway between centres
  const cuts = wins.length ? [wins[0].start] : [];
  for (let i = 1; i < wins.length; i++) cuts.push((centres[i - 1] + centres[i]) / 2);
  if (wins.length) cuts.push(wins[wins.length - 1].end);
  const all = [].concat.apply([], wins.map(function (w) { return w.scores; }).concat(
    [].concat.apply([], persons.map(function (p) { return p.rows.map(function (r) { return r.scores; }); }))));
  const lo = data.probabilities ? 0 : Math.min.apply(null, all.concat([0]));
  const hi = data.probabilities ? 1 : Math.max.apply(null, all.concat([lo + 1e-6]));
  let width = 0, cursor = null, hoverLine = null;

  function el(name, attrs, parent) {
    const e = document.createElementNS(SVG, name);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }
  function x(t) { return PAD + (t / D) * (width - 2 * PAD); }
  function y(v) { return TOP + CURVES - ((v - lo) / (hi - lo)) * CURVES; }
  function timeAt(clientX) {
    const r = timeline.getBoundingClientRect();
    return Math.min(D, Math.max(0, ((clientX - r.left - PAD) / (width - 2 * PAD)) * D));
  }
  function fmt(t) {
    if (D < 600) return t.toFixed(t < 10 ? 1 : 0) + " s";
    const m = Math.floor(t / 60), s = Math.floor(t % 60);
    return m + ":" + (s < 10 ? "0" : "") + s;
  }
  function windowAt(t) {  // nearest window centre
    let best = -1, gap = Infinity;
    for (let i = 0; i < centres.length; i++) {
      const g = Math.abs(centres[i] - t);
      if (g < gap) { gap = g; best = i; }
    }
    return best;
  }
  function lineAt(t) {
    for (const c of data.lines) if (c[0] <= t && t < c[1]) return c[2];
    return "";
  }

  function draw() {
    width = Math.max(320, timeline.clientWidth);
    timeline.textContent = "";
    const svg = el("svg", { width: width, height: HEIGHT, viewBox: "0 0 " + width + " " + HEIGHT }, timeline);
    const defs = el("defs", {}, svg);
    const hatch = el("pattern", { id: "hatch", width: 6, height: 6, patternUnits: "userSpaceOnUse",
      patternTransform: "rotate(45)" }, defs);
    el("line", { x1: 0, y1: 0, x2: 0, y2: 6, stroke: "#333", "stroke-width": 2 }, hatch);
    wins.forEach(function (w, i) {
      const x0 = x(cuts[i]), x1 = x(cuts[i + 1]);
      const seg = el("rect", { x: x0, y: 2, width: Math.max(0.5, x1 - x0), height: BAND, class: "segment",
        fill: colors[classes.indexOf(w.top)] || "#999", "fill-opacity": w.person ? 1 : 0.35 }, svg);
      seg.dataset.window = i;
      if (!w.person) el("rect", { x: x0, y: TOP, width: Math.max(0.5, x1 - x0), height: CURVES, fill: "#e5e5e5" }, svg);
      if (w.padded) {
        el("rect", { x: x0, y: 2, width: Math.max(0.5, x1 - x0), height: BAND, fill: "url(#hatch)", "fill-opacity": 0.5 }, svg);
        el("rect", { x: x0, y: TOP, width: Math.max(0.5, x1 - x0), height: CURVES, fill: "url(#hatch)", "fill-opacity": 0.25 }, svg);
      }
    });
    // grid, axis and ticks
    [0, 0.25, 0.5, 0.75, 1].forEach(function (f) {
      const v = lo + f * (hi - lo);
      el("line", { x1: PAD, x2: width - PAD, y1: y(v), y2: y(v), stroke: "#ddd" }, svg);
      el("text", { x: PAD - 4, y: y(v) + 4, "text-anchor": "end", "font-size": 10, fill: "#666" }, svg).textContent = v.toFixed(2);
    });
    const steps = [0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600];
    const step = steps.find(function (s) { return D / s <= Math.max(4, (width - 2 * PAD) / 80); }) || 7200;
    for (let t = 0; t <= D + 1e-9; t += step) {
      el("line", { x1: x(t), x2: x(t), y1: TOP + CURVES, y2: TOP + CURVES + 4, stroke: "#666" }, svg);
      el("text", { x: x(t), y: TOP + CURVES + AXIS - 4, "text-anchor": "middle", "font-size": 10, fill: "#666" }, svg).textContent = fmt(t);
    }
    classes.forEach(function (name, c) {
      const pts = wins.map(function (w, i) { return x(centres[i]).toFixed(1) + "," + y(w.scores[c]).toFixed(1); });
      el("polyline", { points: pts.join(" "), fill: "none", stroke: colors[c], "stroke-width": 1.6, class: "curve" }, svg)
        .dataset.cls = name;
    });
    persons.forEach(function (p, k) { lane(svg, p, k); });
    const bottom = persons.length ? HEIGHT : TOP + CURVES;
    hoverLine = el("line", { y1: 0, y2: bottom, stroke: "#888", "stroke-dasharray": "3 3", visibility: "hidden" }, svg);
    cursor = el("line", { id: "cursor", y1: 0, y2: bottom, stroke: "#d00", "stroke-width": 2 }, svg);
    update(video ? video.currentTime : 0);
  }

  // a person's lane: its thumbnail and id in the margin, its top emotion where it is scored
  function lane(svg, p, k) {
    const y0 = LANES + k * LANE;
    const g = el("g", { class: "lane", "data-person": p.id }, svg);
    el("rect", { x: PAD, y: y0 + 3, width: width - 2 * PAD, height: LANE - 6, fill: "#f3f3f3" }, g);
    el("text", { x: 2, y: y0 + LANE / 2 + 4, "font-size": 11, "font-weight": 700, fill: p.color }, g).textContent = p.id;
    if (p.thumbnail) {
      el("image", { href: p.thumbnail, x: 14, y: y0 + 1, width: PAD - 18, height: LANE - 2,
        preserveAspectRatio: "xMidYMid meet", class: "thumb" }, g);
    }
    el("rect", { x: 14, y: y0 + 1, width: PAD - 18, height: LANE - 2, fill: "none", stroke: p.color, "stroke-width": 2 }, g);
    p.rows.forEach(function (r) {
      const x0 = x(cuts[r.window]), x1 = x(cuts[r.window + 1]);
      const seg = el("rect", { x: x0, y: y0 + 3, width: Math.max(0.5, x1 - x0), height: LANE - 6, class: "lane-segment",
        fill: colors[classes.indexOf(r.top)] || "#999" }, g);
      seg.dataset.window = r.window;
    });
    el("line", { x1: PAD, x2: width - PAD, y1: y0 + LANE - 2, y2: y0 + LANE - 2, stroke: p.color, "stroke-width": 2 }, g);
  }
  function laneAt(clientY) {  // the person lane under the pointer, -1 elsewhere
    const top = timeline.getBoundingClientRect().top;
    const k = Math.floor((clientY - top - LANES) / LANE);
    return k >= 0 && k < persons.length ? k : -1;
  }

  function legend() {
    const box = document.getElementById("legend");
    classes.forEach(function (name, c) {
      const item = document.createElement("span");
      const sw = document.createElement("span");
      sw.className = "swatch"; sw.style.background = colors[c];
      item.appendChild(sw); item.appendChild(document.createTextNode(name));
      box.appendChild(item);
    });
    const note = document.createElement("span");
    note.textContent = "faded / grey: no person detected" + (wins.some(function (w) { return w.padded; }) ? "; hatched: padded (stream ended early)" : "") +
      (persons.length ? "; lanes: each person scored alone, blank where not seen enough" : "");
    note.style.color = "#666";
    box.appendChild(note);
  }

  function bars(i) {
    const box = document.getElementById("bars");
    box.textContent = "";
    if (i < 0) return;
    classes.forEach(function (name, c) {
      const v = wins[i].scores[c];
      const row = document.createElement("div"); row.className = "bar";
      const n = document.createElement("span"); n.className = "name"; n.textContent = name;
      const track = document.createElement("span"); track.className = "track";
      const fill = document.createElement("span"); fill.className = "fill";
      fill.style.display = "block"; fill.style.background = colors[c];
      fill.style.width = (100 * Math.max(0, Math.min(1, (v - lo) / (hi - lo)))).toFixed(1) + "%";
      track.appendChild(fill);
      const val = document.createElement("span"); val.className = "val"; val.textContent = v.toFixed(3);
      row.appendChild(n); row.appendChild(track); row.appendChild(val);
      box.appendChild(row);
    });
  }

  function drawBoxes(t, i) {
    if (!canvas || !video) return;
    const dpr = window.devicePixelRatio || 1;
    const cw = video.clientWidth, ch = video.clientHeight;
    if (canvas.width !== Math.round(cw * dpr) || canvas.height !== Math.round(ch * dpr)) {
      canvas.width = Math.round(cw * dpr); canvas.height = Math.round(ch * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    canvas.dataset.labels = "[]";
    if (i < 0) return;
    const w = wins[i];
    if (t < w.start || t > w.end || !w.boxes.length) return;
    const k = Math.min(w.boxes.length - 1, Math.max(0, Math.floor(((t - w.start) / (w.end - w.start)) * w.boxes.length)));
    // the picture is letterboxed inside the element when their aspect ratios differ
    const s = Math.min(cw / data.width, ch / data.height);
    const ox = (cw - data.width * s) / 2, oy = (ch - data.height * s) / 2;
    ctx.scale(dpr, dpr);
    ctx.lineWidth = 2.5;
    ctx.font = "bold 13px system-ui, sans-serif";
    const labels = [];
    for (const b of w.boxes[k]) {
      // per person: the box in the person's colour with the person's own top emotion; a track not
      // scored in this window (seen too briefly) is grey and claims nothing
      let color = colors[classes.indexOf(w.top)] || "#f33", top = w.top, scores = w.scores, label;
      if (persons.length) {
        const p = persons.findIndex(function (q) { return q.id === b[5]; });
        const r = p >= 0 ? rowsOf[p][i] : undefined;
        if (!r) { color = "#aaa"; label = ""; }
        else { color = persons[p].color; top = r.top; scores = r.scores; }
      }
      ctx.strokeStyle = color;
      ctx.strokeRect(ox + b[0] * s, oy + b[1] * s, (b[2] - b[0]) * s, (b[3] - b[1]) * s);
      if (label === "") continue;
      // no top class (scores too close to call): no name is claimed
      label = top ? top + " " + scores[classes.indexOf(top)].toFixed(2) : "no dominant emotion";
      if (persons.length) label = b[5] + ": " + label;
      labels.push(label);
      const tw = ctx.measureText(label).width + 8;
      ctx.fillStyle = color;
      ctx.fillRect(ox + b[0] * s, Math.max(0, oy + b[1] * s - 18), tw, 18);
      ctx.fillStyle = "#fff";
      ctx.fillText(label, ox + b[0] * s + 4, Math.max(13, oy + b[1] * s - 5));
    }
    canvas.dataset.labels = JSON.stringify(labels);  // what is written over the video now
  }

  function peopleNow(i) {  // beside the bars: each person's top emotion in this window
    const box = document.getElementById("people-now");
    if (!box) return;
    box.textContent = "";
    persons.forEach(function (p, k) {
      const r = i >= 0 ? rowsOf[k][i] : undefined;
      const row = document.createElement("div");
      row.className = "person-now"; row.dataset.person = p.id; row.style.color = p.color;
      row.textContent = "person " + p.id + ": " + (r ? (r.top || "no dominant emotion") +
        (r.top ? " " + r.scores[classes.indexOf(r.top)].toFixed(2) : "") : "not seen");
      box.appendChild(row);
    });
  }

  function update(t) {
    const i = windowAt(t);
    if (cursor) { cursor.setAttribute("x1", x(t)); cursor.setAttribute("x2", x(t)); }
    document.getElementById("clock").textContent = t.toFixed(2) + " s" + (i >= 0 ? "  ·  window " + i : "");
    const top = document.getElementById("top-emotion");
    top.textContent = i >= 0 ? (wins[i].top || "no dominant emotion") + (wins[i].person ? "" : " (no person)") : "";
    top.style.color = i >= 0 ? colors[classes.indexOf(wins[i].top)] || "" : "";
    bars(i);
    peopleNow(i);
    document.getElementById("line").textContent = lineAt(t);
    drawBoxes(t, i);
  }

  function showTooltip(ev) {
    const t = timeAt(ev.clientX), i = windowAt(t);
    if (i < 0) return;
    const k = laneAt(ev.clientY), r = k >= 0 ? rowsOf[k][i] : undefined;
    const w = r ? { start: wins[i].start, end: wins[i].end, top: r.top, scores: r.scores, person: true, padded: wins[i].padded } : wins[i];
    hoverLine.setAttribute("x1", x(t)); hoverLine.setAttribute("x2", x(t));
    hoverLine.setAttribute("visibility", "visible");
    tooltip.textContent = "";
    const head = document.createElement("div");
    head.innerHTML = "<b></b>";
    head.firstChild.textContent = w.start.toFixed(2) + "–" + w.end.toFixed(2) + " s";
    head.appendChild(document.createTextNode(" window " + i + (k >= 0 ? " · person " + persons[k].id + (r ? "" : " not seen") : "") +
      (w.person ? "" : " · no person") +
      (w.padded ? " · padded (" + w.padded + " frames repeated)" : "")));
    tooltip.appendChild(head);
    const table = document.createElement("table");
    classes.forEach(function (name, c) {
      const tr = document.createElement("tr");
      tr.className = "score" + (name === w.top ? " best" : "");
      const a = document.createElement("td"), b = document.createElement("td");
      const sw = document.createElement("span"); sw.className = "swatch"; sw.style.background = colors[c];
      a.appendChild(sw); a.appendChild(document.createTextNode(name));
      b.className = "v"; b.textContent = w.scores[c].toFixed(3);
      tr.appendChild(a); tr.appendChild(b); table.appendChild(tr);
    });
    tooltip.appendChild(table);
    tooltip.hidden = false;
    const rect = tooltip.getBoundingClientRect();
    tooltip.style.left = Math.min(ev.clientX + 14, window.innerWidth - rect.width - 4) + "px";
    tooltip.style.top = Math.max(4, ev.clientY - rect.height - 10) + "px";
  }

  function seek(t) {
    if (video && isFinite(t)) video.currentTime = t;
    update(t);
  }

  timeline.addEventListener("mousemove", showTooltip);
  timeline.addEventListener("mouseleave", function () {
    tooltip.hidden = true;
    if (hoverLine) hoverLine.setAttribute("visibility", "hidden");
  });
  timeline.addEventListener("click", function (ev) { seek(timeAt(ev.clientX)); });
  timeline.addEventListener("keydown", function (ev) {
    const now = video ? video.currentTime : 0;
    if (ev.key === "ArrowRight") seek(Math.min(D, now + 1));
    else if (ev.key === "ArrowLeft") seek(Math.max(0, now - 1));
  });
  if (video) {
    const tick = function () { update(video.currentTime); if (!video.paused) requestAnimationFrame(tick); };
    video.addEventListener("play", tick);
    ["timeupdate", "seeked", "loadeddata", "pause"].forEach(function (e) {
      video.addEventListener(e, function () { update(video.currentTime); });
    });
  }
  window.addEventListener("resize", draw);
  if (!data.lines.length) document.getElementById("line").hidden = true;
  legend();
  draw();
})();
