/* satkern head explorer: every layer x head of one utterance as thumbnails, one head large over the
 * log-mel spectrogram with phones on both axes, hover for times / phones / weight, click a row for one
 * query frame's attention, arrow keys between heads and layers, a menu to switch utterance.
 * satkern/report/explorer.py inlines this file; its data is the JSON in each .sk-explorer's
 * <script type="application/json" class="sk-explorer-data"> (maps: zlib-compressed uint8 per row
 * scaled by the row max, base64). Nothing is requested: the maps are inflated with DecompressionStream
 * and drawn on canvases. */
(function () {
  'use strict';
  var SIZE = 480;  // CSS pixels of the large map
  var STRIP = 60;  // spectrogram strip
  var PH = 22;     // phone strip
  var THUMB = 64;  // thumbnail pixels per side (at most)

  function bytes(b64) {
    var bin = atob(b64), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }
  function inflate(data) {
    var stream = new Blob([data]).stream().pipeThrough(new DecompressionStream('deflate'));
    return new Response(stream).arrayBuffer().then(function (b) { return new Uint8Array(b); });
  }
  function fmt(x, d) { return (x === null || x === undefined || isNaN(x)) ? 'NaN' : Number(x).toFixed(d); }
  function el(tag, cls, parent) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (parent) parent.appendChild(e);
    return e;
  }
  function canvas(cls, w, h, parent) {
    var c = el('canvas', cls, parent);
    c.width = w; c.height = h;
    return c;
  }

  function Explorer(root, data) {
    this.root = root;
    this.d = data;
    this.L = data.layers; this.H = data.heads;
    this.mapLut = bytes(data.lut.map);
    this.melLut = bytes(data.lut.mel);
    this.cache = {};
    this.state = {utt: 0, layer: 0, head: 0, row: null};
    this.build();
  }

  Explorer.prototype.build = function () {
    var self = this, d = this.d, root = this.root;
    var bar = el('div', 'skx-bar', root);
    var lab = el('label', '', bar);
    lab.appendChild(document.createTextNode('utterance '));
    this.select = el('select', 'skx-utt', lab);
    d.utts.forEach(function (u, i) {
      var o = el('option', '', self.select);
      o.value = String(i);
      o.textContent = u.id + ' (' + fmt(u.duration, 2) + ' s)';
    });
    this.select.addEventListener('change', function () { self.setUtt(parseInt(self.select.value, 10)); });
    this.title = el('span', 'skx-title', bar);
    el('span', 'skx-help', bar).textContent =
      'click a thumbnail; \u2190 \u2192 head, \u2191 \u2193 layer; hover the map for times and phones; click it for one query\u2019s row';
    var body = el('div', 'skx-body', root);
    this.grid = el('div', 'skx-grid', body);
    this.grid.style.gridTemplateColumns = 'repeat(' + this.H + ', max-content)';
    this.cells = [];
    for (var l = 0; l < this.L; l++) {
      for (var h = 0; h < this.H; h++) {
        var cell = el('div', 'skx-cell skx-' + (d.category[l * this.H + h] || 'none'), this.grid);
        cell.dataset.layer = l; cell.dataset.head = h;
        var c = canvas('skx-thumb', 1, 1, cell);
        var t = el('div', 'skx-lab', cell);
        cell.addEventListener('click', (function (l_, h_) {
          return function () { self.selectHead(l_, h_); root.focus({preventScroll: true}); };
        })(l, h));
        this.cells.push({cell: cell, canvas: c, label: t});
      }
    }
    var detail = el('div', 'skx-detail', body);
    this.head = el('div', 'skx-head', detail);
    var plot = el('div', 'skx-plot', detail);
    el('div', 'skx-corner', plot);
    var top = el('div', 'skx-top', plot);
    this.phX = canvas('skx-phx', SIZE, PH, top);
    this.melX = canvas('skx-melx', 1, 1, top);
    var left = el('div', 'skx-left', plot);
    left.style.display = 'flex';
    this.phY = canvas('skx-phy', PH, SIZE, left);
    this.melY = canvas('skx-mely', 1, 1, left);
    var wrap = el('div', 'skx-mapwrap', plot);
    this.map = canvas('skx-map', 1, 1, wrap);
    this.over = canvas('skx-over', SIZE, SIZE, wrap);
    el('div', '', plot);
    var rowbox = el('div', 'skx-rowbox', plot);
    this.rowLab = el('div', 'skx-rowlab', rowbox);
    this.row = canvas('skx-row', SIZE, 90, rowbox);
    this.note = el('div', 'skx-note', detail);
    this.tip = el('div', 'skx-tip', root);
    this.tip.hidden = true;
    this.over.addEventListener('mousemove', function (e) { self.hover(e); });
    this.over.addEventListener('mouseleave', function () { self.tip.hidden = true; });
    this.over.addEventListener('click', function (e) { self.pickRow(e); });
    root.addEventListener('keydown', function (e) { self.key(e); });
  };

  Explorer.prototype.utt = function () { return this.cache[this.state.utt]; };

  Explorer.prototype.decode = function (i) {
    var self = this;
    if (this.cache[i]) return Promise.resolve(this.cache[i]);
    var u = this.d.utts[i];
    return Promise.all([inflate(bytes(u.maps)), inflate(bytes(u.mel.data))]).then(function (r) {
      var P = u.bins, rm = new Float32Array(bytes(u.rowmax).buffer);
      var mapMax = new Float64Array(self.L * self.H);
      for (var k = 0; k < self.L * self.H; k++) {
        var m = 0;
        for (var i2 = 0; i2 < P; i2++) if (rm[k * P + i2] > m) m = rm[k * P + i2];
        mapMax[k] = m;
      }
      var dur = u.frames / self.d.frameRate;
      var melRows = Math.max(1, Math.min(u.mel.rows, Math.ceil(dur / self.d.hop)));
      var c = {u: u, P: P, q: r[0], rm: rm, mapMax: mapMax, mel: r[1], melRows: melRows, dur: dur};
      self.cache[i] = c;
      return c;
    });
  };

  // weight of (query bin qi, key bin kj) of head k
  Explorer.prototype.weight = function (c, k, qi, kj) {
    var P = c.P;
    return c.q[(k * P + qi) * P + kj] * c.rm[k * P + qi] / 255;
  };
  Explorer.prototype.colorIndex = function (w, max) {
    if (!(max > 0)) return 0;
    return Math.round(255 * Math.pow(Math.min(1, w / max), this.d.gamma));
  };

  Explorer.prototype.setUtt = function (i) {
    var self = this;
    this.root.dataset.ready = '0';
    this.state.utt = i;
    this.state.row = null;
    this.select.value = String(i);
    return this.decode(i).then(function () {
      self.drawThumbs();
      self.drawAxes();
      self.drawHead();
      self.root.dataset.utt = String(i);
      self.root.dataset.ready = '1';
    });
  };

  Explorer.prototype.drawThumbs = function () {
    var c = this.utt(), P = c.P, n = Math.min(P, THUMB), u = c.u;
    for (var k = 0; k < this.L * this.H; k++) {
      var cv = this.cells[k].canvas;
      cv.width = n; cv.height = n;
      var ctx = cv.getContext('2d'), img = ctx.createImageData(n, n), px = img.data;
      var max = c.mapMax[k];
      for (var a = 0; a < n; a++) {
        var r0 = Math.floor(a * P / n), r1 = Math.max(r0 + 1, Math.floor((a + 1) * P / n));
        for (var b = 0; b < n; b++) {
          var c0 = Math.floor(b * P / n), c1 = Math.max(c0 + 1, Math.floor((b + 1) * P / n)), w = 0;
          for (var i = r0; i < r1; i++) {
            var s = c.rm[k * P + i] / 255, base = (k * P + i) * P;
            for (var j = c0; j < c1; j++) { var x = c.q[base + j] * s; if (x > w) w = x; }
          }
          var ci = this.colorIndex(w, max) * 3, o = (a * n + b) * 4;
          px[o] = this.mapLut[ci]; px[o + 1] = this.mapLut[ci + 1]; px[o + 2] = this.mapLut[ci + 2]; px[o + 3] = 255;
        }
      }
      ctx.putImageData(img, 0, 0);
      var l = Math.floor(k / this.H), h = k % this.H, mt = u.metrics;
      this.cells[k].label.innerHTML = '';
      this.cells[k].label.appendChild(document.createTextNode('L' + l + ' H' + h + ' ' + (this.d.category[k] || '')));
      this.cells[k].label.appendChild(document.createElement('br'));
      this.cells[k].label.appendChild(document.createTextNode('G ' + fmt(mt.G[k], 2) + ' V ' + fmt(mt.V[k], 2)));
      this.cells[k].label.appendChild(document.createElement('br'));
      this.cells[k].label.appendChild(document.createTextNode('D ' + fmt(mt.D[k], 3) + ' W ' + fmt(mt.W[k], 2)));
      this.cells[k].cell.title = 'layer ' + l + ' head ' + h + ' (' + (this.d.category[k] || '?') + '): G ' +
        fmt(mt.G[k], 4) + ', V ' + fmt(mt.V[k], 4) + ', D ' + fmt(mt.D[k], 4) + ', W ' + fmt(mt.W[k], 4);
    }
  };

  Explorer.prototype.phoneAt = function (t) {
    var ph = this.utt().u.phones;
    for (var i = 0; i < ph.length; i++) if (ph[i][0] <= t && t < ph[i][1]) return ph[i][2];
    return '';
  };
  Explorer.prototype.binTimes = function (i) {
    var c = this.utt(), f = c.u.factor, fr = this.d.frameRate;
    return [i * f / fr, Math.min((i + 1) * f, c.u.frames) / fr];
  };

  Explorer.prototype.drawAxes = function () {
    var c = this.utt(), d = this.d, nm = c.u.mel.cols, rows = c.melRows, mel = c.mel, lut = this.melLut;
    // keys: time to the right, low frequencies at the bottom
    this.melX.width = rows; this.melX.height = nm;
    var ctx = this.melX.getContext('2d'), img = ctx.createImageData(rows, nm), px = img.data;
    for (var t = 0; t < rows; t++) for (var m = 0; m < nm; m++) {
      var ci = mel[t * nm + m] * 3, o = ((nm - 1 - m) * rows + t) * 4;
      px[o] = lut[ci]; px[o + 1] = lut[ci + 1]; px[o + 2] = lut[ci + 2]; px[o + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
    // queries: time downwards, low frequencies next to the map
    this.melY.width = nm; this.melY.height = rows;
    ctx = this.melY.getContext('2d'); img = ctx.createImageData(nm, rows); px = img.data;
    for (t = 0; t < rows; t++) for (m = 0; m < nm; m++) {
      ci = mel[t * nm + m] * 3; o = (t * nm + m) * 4;
      px[o] = lut[ci]; px[o + 1] = lut[ci + 1]; px[o + 2] = lut[ci + 2]; px[o + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
    // phones: alternating bands, labels where they fit
    var ph = c.u.phones, sx = SIZE / c.dur;
    var gx = this.phX.getContext('2d'), gy = this.phY.getContext('2d');
    gx.clearRect(0, 0, SIZE, PH); gy.clearRect(0, 0, PH, SIZE);
    gx.font = '10px sans-serif'; gy.font = '9px sans-serif';
    gx.textBaseline = 'middle'; gy.textBaseline = 'middle';
    for (var i = 0; i < ph.length; i++) {
      var a = ph[i][0] * sx, b = Math.min(ph[i][1], c.dur) * sx;
      gx.fillStyle = i % 2 ? '#eceff1' : '#cfd8dc'; gx.fillRect(a, 0, b - a, PH);
      gy.fillStyle = gx.fillStyle; gy.fillRect(0, a, PH, b - a);
      gx.fillStyle = '#263238'; gy.fillStyle = '#263238';
      if (gx.measureText(ph[i][2]).width + 2 <= b - a) gx.fillText(ph[i][2], a + 1, PH / 2);
      if (b - a >= 10 && gy.measureText(ph[i][2]).width <= PH) gy.fillText(ph[i][2], 1, (a + b) / 2);
    }
  };

  Explorer.prototype.selectHead = function (l, h) {
    this.state.layer = Math.max(0, Math.min(this.L - 1, l));
    this.state.head = Math.max(0, Math.min(this.H - 1, h));
    this.drawHead();
  };

  Explorer.prototype.drawHead = function () {
    var c = this.utt(), P = c.P, l = this.state.layer, h = this.state.head, k = l * this.H + h, u = c.u, d = this.d;
    this.cells.forEach(function (x, i) { x.cell.classList.toggle('skx-sel', i === k); });
    this.map.width = P; this.map.height = P;
    var ctx = this.map.getContext('2d'), img = ctx.createImageData(P, P), px = img.data, max = c.mapMax[k];
    for (var i = 0; i < P; i++) {
      var s = c.rm[k * P + i] / 255, base = (k * P + i) * P;
      for (var j = 0; j < P; j++) {
        var ci = this.colorIndex(c.q[base + j] * s, max) * 3, o = (i * P + j) * 4;
        px[o] = this.mapLut[ci]; px[o + 1] = this.mapLut[ci + 1]; px[o + 2] = this.mapLut[ci + 2]; px[o + 3] = 255;
      }
    }
    ctx.putImageData(img, 0, 0);
    this.map.dataset.layer = l; this.map.dataset.head = h; this.map.dataset.utt = this.state.utt;
    this.root.dataset.layer = l; this.root.dataset.head = h;
    var cat = d.category[k] || '', mt = u.metrics, cp = d.corpus;
    this.title.textContent = u.id + ': layer ' + l + ' head ' + h;
    this.head.innerHTML = '';
    var b = el('b', 'skx-cat-' + cat, this.head);
    b.textContent = 'layer ' + l + ' head ' + h + (cat ? ' (' + cat + ')' : '');
    this.head.appendChild(document.createTextNode(
      '  this utterance: G ' + fmt(mt.G[k], 4) + ', V ' + fmt(mt.V[k], 4) + ', D ' + fmt(mt.D[k], 4) + ', W ' +
      fmt(mt.W[k], 4) + (cp ? ';  corpus: G ' + fmt(cp.G[k], 4) + ', V ' + fmt(cp.V[k], 4) + ', D ' +
      fmt(cp.D[k], 4) + ', W ' + fmt(cp.W[k], 4) : '')));
    this.note.textContent = (u.factor > 1 ?
      'Long utterance: ' + u.frames + ' frames averaged over bins of ' + u.factor + ' frames (' + P +
      ' per axis); a cell is the mean weight of its frames. ' : P + ' frames per axis. ') +
      'Stored uint8 per row (max abs error ' + u.qerr.toExponential(1) + '). Colour: (weight / map max)^' +
      d.gamma + '.';
    this.drawOverlay();
    this.drawRow();
  };

  Explorer.prototype.drawOverlay = function () {
    var c = this.utt(), ctx = this.over.getContext('2d'), ph = c.u.phones, sx = SIZE / c.dur;
    ctx.clearRect(0, 0, SIZE, SIZE);
    ctx.strokeStyle = 'rgba(255,255,255,0.35)'; ctx.lineWidth = 1;
    ctx.beginPath();
    for (var i = 1; i < ph.length; i++) {
      var x = Math.round(ph[i][0] * sx) + 0.5;
      ctx.moveTo(x, 0); ctx.lineTo(x, SIZE); ctx.moveTo(0, x); ctx.lineTo(SIZE, x);
    }
    ctx.stroke();
    if (this.state.row !== null) {
      var y0 = this.state.row * SIZE / c.P, y1 = (this.state.row + 1) * SIZE / c.P;
      ctx.strokeStyle = '#ff5252'; ctx.lineWidth = 1.5;
      ctx.strokeRect(0.75, y0, SIZE - 1.5, Math.max(1, y1 - y0));
    }
  };

  Explorer.prototype.binAt = function (e) {
    var r = this.over.getBoundingClientRect(), P = this.utt().P;
    var x = (e.clientX - r.left) / r.width, y = (e.clientY - r.top) / r.height;
    if (x < 0 || y < 0 || x >= 1 || y >= 1) return null;
    return [Math.floor(y * P), Math.floor(x * P)];
  };

  Explorer.prototype.hover = function (e) {
    var at = this.binAt(e);
    if (!at) { this.tip.hidden = true; return; }
    var c = this.utt(), k = this.state.layer * this.H + this.state.head;
    var qt = this.binTimes(at[0]), kt = this.binTimes(at[1]);
    var qp = this.phoneAt((qt[0] + qt[1]) / 2), kp = this.phoneAt((kt[0] + kt[1]) / 2);
    var w = this.weight(c, k, at[0], at[1]), tip = this.tip;
    tip.innerHTML = '';
    [['query ', qt, qp], ['key ', kt, kp]].forEach(function (x) {
      tip.appendChild(document.createTextNode(x[0] + fmt(x[1][0], 3) + '\u2013' + fmt(x[1][1], 3) + ' s  ' +
                                              (x[2] || '\u2013')));
      tip.appendChild(document.createElement('br'));
    });
    tip.appendChild(document.createTextNode('weight ' + w.toPrecision(4) +
                                            (c.u.factor > 1 ? ' (mean over the bin\u2019s frames)' : '')));
    var ds = tip.dataset;
    ds.qbin = at[0]; ds.kbin = at[1]; ds.qs = qt[0]; ds.qe = qt[1]; ds.ks = kt[0]; ds.ke = kt[1];
    ds.qphone = qp; ds.kphone = kp; ds.weight = w;
    var rr = this.root.getBoundingClientRect();
    tip.style.left = (e.clientX - rr.left + 14) + 'px';
    tip.style.top = (e.clientY - rr.top + 14) + 'px';
    tip.hidden = false;
  };

  Explorer.prototype.pickRow = function (e) {
    var at = this.binAt(e);
    if (!at) return;
    this.state.row = at[0];
    this.drawOverlay();
    this.drawRow();
  };

  Explorer.prototype.drawRow = function () {
    var ctx = this.row.getContext('2d'), W = this.row.width, Hh = this.row.height, r = this.state.row;
    ctx.clearRect(0, 0, W, Hh);
    this.row.dataset.queryBin = r === null ? '' : r;
    if (r === null) {
      this.rowLab.textContent = 'click a row of the map: that query\u2019s attention over key time';
      return;
    }
    var c = this.utt(), P = c.P, k = this.state.layer * this.H + this.state.head, max = c.rm[k * P + r];
    var ph = c.u.phones, sx = W / c.dur;
    ctx.fillStyle = '#eceff1';
    for (var i = 0; i < ph.length; i += 2) ctx.fillRect(ph[i][0] * sx, 0, (Math.min(ph[i][1], c.dur) - ph[i][0]) * sx, Hh);
    ctx.fillStyle = '#1565c0';
    var best = 0;
    for (var j = 0; j < P; j++) {
      var w = this.weight(c, k, r, j), h = max > 0 ? (Hh - 4) * w / max : 0;
      if (w > this.weight(c, k, r, best)) best = j;
      ctx.fillRect(j * W / P, Hh - h, Math.max(1, W / P - (P < 120 ? 1 : 0)), h);
    }
    var qt = this.binTimes(r), bt = this.binTimes(best);
    this.rowLab.textContent = 'query ' + fmt(qt[0], 3) + '\u2013' + fmt(qt[1], 3) + ' s (' +
      (this.phoneAt((qt[0] + qt[1]) / 2) || '\u2013') + '): attention over key time; max ' +
      this.weight(c, k, r, best).toPrecision(3) + ' at ' + fmt(bt[0], 3) + ' s (' +
      (this.phoneAt((bt[0] + bt[1]) / 2) || '\u2013') + ')';
  };

  Explorer.prototype.key = function (e) {
    var s = this.state, moves = {ArrowRight: [0, 1], ArrowLeft: [0, -1], ArrowDown: [1, 0], ArrowUp: [-1, 0]};
    if (e.key === 'Escape') { s.row = null; this.drawOverlay(); this.drawRow(); e.preventDefault(); return; }
    var m = moves[e.key];
    if (!m || e.target === this.select) return;
    e.preventDefault();
    this.selectHead(s.layer + m[0], s.head + m[1]);
  };

  function start(root) {
    var blob = root.querySelector('script.sk-explorer-data');
    if (!blob || root.dataset.started) return;
    root.dataset.started = '1';
    var ex = new Explorer(root, JSON.parse(blob.textContent));
    window.satkernExplorers = window.satkernExplorers || [];
    window.satkernExplorers.push(ex);
    ex.setUtt(0).then(function () {
      root.dataset.readyMs = String(Math.round(performance.now()));  // since navigation started
    }, function (err) { console.error('satkern explorer: ' + err); });
  }
  Array.prototype.forEach.call(document.querySelectorAll('.sk-explorer'), start);
})();
