// The detections viewer (index.html): the image list, the selected image on a canvas with its boxes, the details.
// Data: window.INCEPTION_DETECTIONS (set by detections.js) or a JSON opened with "open JSON", of the form
// `inception detect` writes (see normalise). Boxes are 1-based inclusive pixel corners: box [x1, y1, x2, y2]
// covers pixel columns x1-1 .. x2-1, so on the canvas it spans x1-1 .. x2 image units, drawn on whole device
// pixels. After each drawing the canvas carries data-rect="left top width height" (CSS pixels in the window),
// data-image, data-status and data-boxes, so that tests and scripts can find where the boxes must be.
(function () {
  'use strict';

  // Class colours: well-separated ones first (ColorBrewer's Set1 and Dark2, the first a pure red), then hues a
  // golden angle apart, so that a dataset of 200 classes still gets distinct neighbours.
  const PALETTE = ['#e41a1c', '#377eb8', '#4daf4a', '#984ea3', '#ff7f00', '#a65628', '#f781bf', '#1b9e77',
    '#666666', '#e6ab02', '#17becf', '#7570b3'];
  const PAD = 16; // CSS pixels between the canvas and the edges of its pane

  const $ = (id) => document.getElementById(id);
  const el = {
    threshold: $('threshold'), thresholdValue: $('threshold-value'), classFilter: $('class-filter'),
    gtControl: $('gt-control'), showGt: $('show-gt'), openJson: $('open-json'), openImages: $('open-images'),
    summary: $('summary'), list: $('image-list'), stage: $('stage'), canvas: $('canvas'), message: $('message'),
    name: $('image-name'), info: $('image-info'), detBody: document.querySelector('#det-table tbody'),
    detMore: $('det-more'), gtSection: $('gt-section'), gtBody: document.querySelector('#gt-table tbody'),
    settingSection: $('setting-section'), setting: $('setting'),
  };

  const state = {
    data: null,        // normalise()'s result
    index: 0,          // selected image
    t: 0.5,            // score threshold
    cls: null,         // the class shown, null for all
    showGt: true,
    highlight: null,   // the detection under the mouse in the table
    files: new Map(),  // base name -> object URL, from "images..."
    cache: new Map(),  // image URL -> {pic, status}, the few most recent
    items: [],         // the list's <li>s
  };

  // ------------------------------------------------------------------------------------------------------------
  // data

  function hslToHex(h, s, l) {
    const f = (n) => {
      const k = (n + h / 30) % 12;
      const v = l - s * Math.min(l, 1 - l) * Math.max(-1, Math.min(k - 3, 9 - k, 1));
      return Math.round(255 * v).toString(16).padStart(2, '0');
    };
    return '#' + f(0) + f(8) + f(4);
  }

  function classColour(i) {
    return i < PALETTE.length ? PALETTE[i] : hslToHex((i * 137.508) % 360, 0.65, 0.45);
  }

  function isBox(b) {
    return Array.isArray(b) && b.length === 4 && b.every((v) => typeof v === 'number' && isFinite(v));
  }

  function baseName(path) {
    return String(path).replace(/\/+$/, '').split('/').pop();
  }

  // The detections JSON -> {setting, classes: [{name, wnid, colour, index}], images: [{name, file, src, width,
  // height, seconds, imageId, dets: [{cls, score, box}] best first, gt: [{cls, box, difficult}] or null}],
  // skipped}. Classes come from "classes" (by id, name or WNID) and, when missing there, from the detections.
  function normalise(raw) {
    if (!raw || typeof raw !== 'object' || !Array.isArray(raw.images)) throw new Error('expected {"images": [...]}');
    const classes = [], byId = new Map(), byName = new Map();
    const addClass = (id, name, wnid) => {
      const c = { name, wnid, colour: classColour(classes.length), index: classes.length };
      classes.push(c);
      if (id !== null) byId.set(id, c);
      if (!byName.has(name)) byName.set(name, c);
      if (wnid && !byName.has(wnid)) byName.set(wnid, c);
      return c;
    };
    for (const c of Array.isArray(raw.classes) ? raw.classes : []) {
      if (c && c.name !== undefined) addClass(typeof c.id === 'number' ? c.id : null, String(c.name), c.wnid || null);
    }
    const classOf = (o) => {
      for (const id of [o.class_id, o.class]) if (typeof id === 'number' && byId.has(id)) return byId.get(id);
      const name = String(o.class !== undefined ? o.class : o.class_id);
      return byName.get(name) || addClass(typeof o.class_id === 'number' ? o.class_id : null, name, null);
    };
    let skipped = 0;
    const images = raw.images.map((im, i) => {
      const id = im && im.image_id !== undefined ? im.image_id : i;
      const file = im && typeof im.file === 'string' ? im.file : 'image ' + id;
      const dets = [];
      for (const d of im && Array.isArray(im.detections) ? im.detections : []) {
        if (d && isBox(d.box) && typeof d.score === 'number') {
          dets.push({ cls: classOf(d), score: d.score, box: d.box });
        } else {
          skipped++;
        }
      }
      dets.sort((a, b) => b.score - a.score);
      let gt = null;
      if (im && Array.isArray(im.ground_truth)) {
        gt = [];
        for (const g of im.ground_truth) {
          if (g && isBox(g.box)) gt.push({ cls: classOf(g), box: g.box, difficult: !!g.difficult });
          else skipped++;
        }
      }
      return {
        name: baseName(file), file, src: im && typeof im.src === 'string' ? im.src : file,
        width: im && im.width > 0 ? im.width : 0, height: im && im.height > 0 ? im.height : 0,
        seconds: im && typeof im.seconds === 'number' ? im.seconds : null,
        imageId: im && im.image_id !== undefined ? im.image_id : null, dets, gt,
      };
    });
    return { setting: raw.setting && typeof raw.setting === 'object' ? raw.setting : null, classes, images, skipped };
  }

  const current = () => (state.data && state.data.images.length ? state.data.images[state.index] : null);
  const passes = (d) => d.score >= state.t && (state.cls === null || d.cls === state.cls);

  function formatT(t) {
    return Math.abs(t * 100 - Math.round(t * 100)) < 1e-9 ? t.toFixed(2) : String(+t.toFixed(4));
  }

  function formatBox(b) {
    return b.map((v) => (Number.isInteger(v) ? String(v) : v.toFixed(1))).join(', ');
  }

  // ------------------------------------------------------------------------------------------------------------
  // images: loaded on demand, the neighbours ahead of time

  // A path (relative to this page, or absolute) as a URL: each segment percent-encoded, so that names with
  // spaces, '#' or '%' still load.
  function pathUrl(path) {
    if (/^[a-z][a-z0-9+.-]*:/i.test(path)) return path; // already a URL
    return path.split('/').map(encodeURIComponent).join('/');
  }

  const imageUrl = (im) => state.files.get(im.name) || pathUrl(im.src);

  function imageEntry(im) {
    const url = imageUrl(im);
    let e = state.cache.get(url);
    if (e) return e;
    e = { pic: new Image(), status: 'loading', url };
    const done = (status) => {
      e.status = status;
      const cur = current();
      if (cur && imageUrl(cur) === url) draw();
    };
    e.pic.onload = () => done('ok');
    e.pic.onerror = () => done('error');
    e.pic.src = url;
    state.cache.set(url, e);
    if (state.cache.size > 12) state.cache.delete(state.cache.keys().next().value);
    return e;
  }

  // ------------------------------------------------------------------------------------------------------------
  // drawing

  function textColourOn(hex) {
    const v = parseInt(hex.slice(1), 16);
    const lum = 0.299 * (v >> 16) + 0.587 * ((v >> 8) & 255) + 0.114 * (v & 255);
    return lum > 150 ? '#111111' : '#ffffff';
  }

  // Image box -> device pixels: [L, R) x [T, B), at least one pixel wide and high.
  function deviceRect(b, kx, ky) {
    const L = Math.round((b[0] - 1) * kx), T = Math.round((b[1] - 1) * ky);
    return { L, T, R: Math.max(L + 1, Math.round(b[2] * kx)), B: Math.max(T + 1, Math.round(b[3] * ky)) };
  }

  // A rectangle's outline of width lw lying inside r (the box's own pixels), or r filled when too small for one.
  function strokeInside(ctx, r, lw) {
    const w = r.R - r.L, h = r.B - r.T;
    if (w <= 2 * lw || h <= 2 * lw) {
      ctx.fillRect(r.L, r.T, w, h);
      return;
    }
    ctx.lineWidth = lw;
    ctx.strokeRect(r.L + lw / 2, r.T + lw / 2, w - lw, h - lw);
  }

  // A tag with text, above the box's top-left corner (or just inside it at the top of the image), or below its
  // bottom-left corner; kept within the canvas.
  function drawTag(ctx, text, bg, r, below, dpr) {
    const th = Math.round(16 * dpr), padX = Math.round(4 * dpr);
    ctx.font = '600 ' + Math.round(12 * dpr) + 'px system-ui, "DejaVu Sans", sans-serif';
    const tw = Math.ceil(ctx.measureText(text).width) + 2 * padX;
    const x = Math.max(0, Math.min(r.L, ctx.canvas.width - tw));
    let y = below ? r.B : r.T - th;
    if (y < 0) y = r.T;
    if (y + th > ctx.canvas.height) y = r.B - th;
    ctx.fillStyle = bg;
    ctx.fillRect(x, y, tw, th);
    ctx.fillStyle = textColourOn(bg);
    ctx.textBaseline = 'middle';
    ctx.fillText(text, x + padX, y + th / 2 + 0.5 * dpr);
  }

  // Ground truth: white dashes outlined in black, so that it reads on any image and never looks like a detection.
  function drawTruth(ctx, g, kx, ky, dpr) {
    const r = deviceRect(g.box, kx, ky), lw = Math.max(2, Math.round(2 * dpr)), ol = Math.round(dpr);
    const inset = lw / 2 + ol;
    ctx.save();
    ctx.setLineDash([7 * dpr, 5 * dpr]);
    ctx.lineJoin = 'miter';
    for (const [colour, width] of [['#111111', lw + 2 * ol], ['#ffffff', lw]]) {
      ctx.strokeStyle = colour;
      ctx.lineWidth = width;
      ctx.strokeRect(r.L + inset, r.T + inset, Math.max(0, r.R - r.L - 2 * inset), Math.max(0, r.B - r.T - 2 * inset));
    }
    ctx.restore();
    drawTag(ctx, 'GT ' + g.cls.name + (g.difficult ? ' (difficult)' : ''), '#1d232a', r, true, dpr);
  }

  function draw() {
    const im = current();
    const canvas = el.canvas;
    canvas.hidden = !im;
    if (!im) return;
    const entry = imageEntry(im);
    const pic = entry.status === 'ok' ? entry.pic : null;
    // The image's size from the JSON; else from the picture; else enough to hold the boxes.
    let W = im.width || (pic ? pic.naturalWidth : 0), H = im.height || (pic ? pic.naturalHeight : 0);
    if (!W || !H) {
      W = H = 1;
      for (const d of im.dets.concat(im.gt || [])) W = Math.max(W, d.box[2]), H = Math.max(H, d.box[3]);
    }
    const availW = el.stage.clientWidth - 2 * PAD, availH = el.stage.clientHeight - 2 * PAD;
    if (availW < 8 || availH < 8) return;
    const s = Math.min(availW / W, availH / H);
    const cssW = Math.max(1, Math.floor(W * s)), cssH = Math.max(1, Math.floor(H * s));
    // The canvas's corner on whole CSS pixels, so that its pixels meet the screen's one to one (no blur).
    const sr = el.stage.getBoundingClientRect();
    const left = Math.round(sr.left + PAD + (availW - cssW) / 2) - sr.left, top = Math.round(sr.top + PAD) - sr.top;
    Object.assign(canvas.style, { left: left + 'px', top: top + 'px', width: cssW + 'px', height: cssH + 'px' });
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(cssW * dpr);
    canvas.height = Math.round(cssH * dpr);
    const ctx = canvas.getContext('2d');
    const kx = canvas.width / W, ky = canvas.height / H; // device pixels per image pixel

    if (pic) {
      ctx.imageSmoothingQuality = 'high';
      ctx.drawImage(pic, 0, 0, canvas.width, canvas.height);
    } else {
      ctx.fillStyle = '#e4e7eb';
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      ctx.fillStyle = '#5f6b78';
      ctx.font = Math.round(13 * dpr) + 'px system-ui, "DejaVu Sans", sans-serif';
      ctx.textAlign = 'center';
      ctx.textBaseline = 'middle';
      const lines = entry.status === 'loading' ? ['loading ' + im.src]
        : ['cannot load ' + im.src, 'use "images..." to pick the image files'];
      lines.forEach((line, k) => ctx.fillText(line, canvas.width / 2, canvas.height / 2 + (k - 0.5) * 18 * dpr));
      ctx.textAlign = 'start';
    }

    if (state.showGt && im.gt) {
      for (const g of im.gt) if (state.cls === null || g.cls === state.cls) drawTruth(ctx, g, kx, ky, dpr);
    }
    // Detections from the lowest score up, so that the best lie on top; their labels after all the outlines.
    const shown = im.dets.filter(passes).reverse();
    if (state.highlight && shown.includes(state.highlight)) {
      shown.splice(shown.indexOf(state.highlight), 1);
      shown.push(state.highlight);
    }
    const lw = Math.max(2, Math.round(2 * dpr));
    const rects = shown.map((d) => deviceRect(d.box, kx, ky));
    shown.forEach((d, k) => {
      ctx.strokeStyle = ctx.fillStyle = d.cls.colour;
      strokeInside(ctx, rects[k], d === state.highlight ? 2 * lw : lw);
    });
    shown.forEach((d, k) => drawTag(ctx, d.cls.name + ' ' + d.score.toFixed(2), d.cls.colour, rects[k], false, dpr));

    const r = canvas.getBoundingClientRect();
    canvas.dataset.rect = [r.left, r.top, r.width, r.height].join(' ');
    canvas.dataset.image = String(state.index);
    canvas.dataset.status = entry.status;
    canvas.dataset.boxes = String(shown.length);
  }

  let drawQueued = false;
  function drawSoon() {
    if (drawQueued) return;
    drawQueued = true;
    requestAnimationFrame(() => {
      drawQueued = false;
      draw();
    });
  }

  // ------------------------------------------------------------------------------------------------------------
  // the panes

  function make(tag, cls, text) {
    const n = document.createElement(tag);
    if (cls) n.className = cls;
    if (text !== undefined) n.textContent = text;
    return n;
  }

  function swatch(colour) {
    const s = make('span', 'swatch');
    s.style.background = colour;
    return s;
  }

  function buildList() {
    el.list.textContent = '';
    const frag = document.createDocumentFragment();
    state.items = state.data.images.map((im, i) => {
      const li = make('li');
      li.dataset.index = String(i);
      li.title = im.file;
      li.append(make('span', 'name', im.name), make('span', 'count'));
      frag.append(li);
      return li;
    });
    el.list.append(frag);
  }

  function buildClassFilter() {
    const sel = el.classFilter;
    while (sel.options.length > 1) sel.remove(1);
    state.data.classes.forEach((c, i) => {
      const o = make('option', null, c.name);
      o.value = String(i);
      sel.append(o);
    });
    sel.value = state.cls ? String(state.cls.index) : '';
  }

  // Everything that follows the threshold and the class filter: the list's counts, the per-class counts in the
  // filter, the summary.
  function updateCounts() {
    const data = state.data;
    const perClass = new Array(data.classes.length).fill(0);
    let total = 0;
    data.images.forEach((im, i) => {
      let n = 0;
      for (const d of im.dets) {
        if (d.score < state.t) break; // best first
        perClass[d.cls.index]++;
        if (state.cls === null || d.cls === state.cls) n++;
      }
      total += n;
      const count = state.items[i].lastChild;
      if (count.textContent !== String(n)) {
        count.textContent = String(n);
        count.className = n ? 'count' : 'count zero';
      }
    });
    const opts = el.classFilter.options;
    data.classes.forEach((c, i) => (opts[i + 1].textContent = c.name + ' (' + perClass[i] + ')'));
    const plural = (n, one, many) => n + ' ' + (n === 1 ? one : many);
    el.summary.textContent = plural(data.images.length, 'image', 'images') + ', ' +
      plural(total, 'detection', 'detections') + ' \u2265 ' + formatT(state.t) +
      (state.cls ? ' of ' + state.cls.name : '') +
      (data.skipped ? ' (' + plural(data.skipped, 'malformed entry', 'malformed entries') + ' skipped)' : '');
  }

  function renderDetails() {
    const im = current();
    el.detBody.textContent = '';
    el.gtBody.textContent = '';
    if (!im) return;
    el.name.textContent = im.name;
    const info = [];
    if (im.width && im.height) info.push(im.width + ' \u00d7 ' + im.height + ' px');
    if (im.imageId !== null) info.push('image id ' + im.imageId);
    if (im.seconds !== null) info.push(im.seconds.toFixed(2) + ' s');
    info.push(im.file);
    el.info.textContent = info.join(' \u00b7 ');

    let below = 0;
    for (const d of im.dets) {
      if (state.cls !== null && d.cls !== state.cls) continue;
      if (d.score < state.t) {
        below++;
        continue;
      }
      const tr = make('tr');
      const c = make('td');
      c.append(swatch(d.cls.colour), d.cls.name);
      tr.append(c, make('td', 'num', d.score.toFixed(3)), make('td', 'num', formatBox(d.box)));
      tr.addEventListener('mouseenter', () => {
        state.highlight = d;
        drawSoon();
      });
      tr.addEventListener('mouseleave', () => {
        state.highlight = null;
        drawSoon();
      });
      el.detBody.append(tr);
    }
    const shown = el.detBody.childElementCount;
    el.detMore.textContent = (shown ? '' : 'No detections \u2265 ' + formatT(state.t) + '. ') +
      (below ? below + ' more below ' + formatT(state.t) + '.' : '');

    el.gtSection.hidden = !im.gt;
    for (const g of im.gt || []) {
      if (state.cls !== null && g.cls !== state.cls) continue;
      const tr = make('tr');
      const c = make('td');
      c.append(make('span', 'swatch gt'), g.cls.name + (g.difficult ? ' (difficult)' : ''));
      tr.append(c, make('td', 'num', formatBox(g.box)));
      el.gtBody.append(tr);
    }
  }

  function renderSetting() {
    const s = state.data.setting;
    el.setting.textContent = '';
    el.settingSection.hidden = !s;
    for (const k of s ? Object.keys(s) : []) {
      const v = s[k];
      el.setting.append(make('dt', null, k), make('dd', null, typeof v === 'object' ? JSON.stringify(v) : String(v)));
    }
  }

  function writeHash() {
    const parts = ['i=' + state.index, 't=' + formatT(state.t)];
    if (!state.showGt) parts.push('gt=0');
    if (state.cls) parts.push('c=' + encodeURIComponent(state.cls.name));
    try {
      history.replaceState(null, '', '#' + parts.join('&'));
    } catch (err) {
      // some browsers refuse history changes on file:// pages; the hash is a convenience
    }
  }

  function select(i) {
    const n = state.data ? state.data.images.length : 0;
    if (!n) return;
    i = Math.max(0, Math.min(n - 1, i));
    const old = state.items[state.index];
    if (old) old.classList.remove('selected');
    state.index = i;
    state.highlight = null;
    const li = state.items[i];
    li.classList.add('selected');
    li.scrollIntoView({ block: 'nearest' });
    renderDetails();
    draw();
    for (const k of [i + 1, i - 1]) if (k >= 0 && k < n) imageEntry(state.data.images[k]); // ahead of time
    writeHash();
  }

  function setThreshold(t) {
    state.t = Math.max(0, Math.min(1, t));
    el.threshold.value = String(state.t);
    el.thresholdValue.textContent = formatT(state.t);
  }

  function refresh() {
    updateCounts();
    renderDetails();
    drawSoon();
    writeHash();
  }

  // #i=N&t=0.3[&gt=0][&c=name]
  function readHash() {
    const p = new URLSearchParams(location.hash.replace(/^#/, ''));
    if (p.has('t')) {
      const t = parseFloat(p.get('t'));
      if (isFinite(t)) setThreshold(t);
    }
    if (p.has('gt')) state.showGt = p.get('gt') !== '0';
    el.showGt.checked = state.showGt;
    if (p.has('c') && state.data) {
      state.cls = state.data.classes.find((c) => c.name === p.get('c')) || null;
      el.classFilter.value = state.cls ? String(state.cls.index) : '';
    }
    const i = parseInt(p.get('i'), 10);
    return isFinite(i) ? i : state.index;
  }

  function showMessage(text) {
    el.message.textContent = text;
    el.message.hidden = !text;
  }

  function load(raw, origin, fromHash) {
    let data;
    try {
      data = normalise(raw);
    } catch (err) {
      showMessage(origin + ': ' + err.message);
      return;
    }
    showMessage(data.images.length ? '' : origin + ': no images');
    state.data = data;
    state.cls = null;
    state.index = 0;
    state.cache.clear();
    buildList();
    buildClassFilter();
    renderSetting();
    el.gtControl.hidden = !data.images.some((im) => im.gt);
    const i = fromHash ? readHash() : 0;
    updateCounts();
    select(i);
  }

  // ------------------------------------------------------------------------------------------------------------
  // events

  el.threshold.addEventListener('input', () => {
    setThreshold(parseFloat(el.threshold.value));
    refresh();
  });
  el.classFilter.addEventListener('change', () => {
    const v = el.classFilter.value;
    state.cls = v === '' ? null : state.data.classes[+v];
    refresh();
  });
  el.showGt.addEventListener('change', () => {
    state.showGt = el.showGt.checked;
    drawSoon();
    writeHash();
  });
  el.list.addEventListener('click', (ev) => {
    const li = ev.target.closest('li');
    if (li) select(+li.dataset.index);
  });
  document.addEventListener('keydown', (ev) => {
    if (ev.altKey || ev.ctrlKey || ev.metaKey || !state.data) return;
    const t = ev.target;
    if (t && (t.tagName === 'SELECT' || t.tagName === 'TEXTAREA' || (t.tagName === 'INPUT' && t.type !== 'checkbox'))) {
      return; // the slider and the select use the arrows themselves
    }
    const step = { ArrowRight: 1, j: 1, ArrowLeft: -1, k: -1 }[ev.key];
    if (!step) return;
    ev.preventDefault();
    select(state.index + step);
  });
  window.addEventListener('hashchange', () => {
    if (!state.data) return;
    const i = readHash();
    updateCounts();
    select(i);
  });
  window.addEventListener('resize', drawSoon);

  el.openJson.addEventListener('change', () => {
    const file = el.openJson.files[0];
    if (!file) return;
    const reader = new FileReader();
    reader.onload = () => {
      let raw;
      try {
        raw = JSON.parse(reader.result);
      } catch (err) {
        showMessage(file.name + ': not JSON: ' + err.message);
        return;
      }
      load(raw, file.name, false);
    };
    reader.onerror = () => showMessage(file.name + ': cannot read the file');
    reader.readAsText(file);
    el.openJson.value = '';
  });
  el.openImages.addEventListener('change', () => {
    for (const url of state.files.values()) URL.revokeObjectURL(url);
    state.files.clear();
    for (const f of el.openImages.files) state.files.set(f.name, URL.createObjectURL(f));
    state.cache.clear();
    el.openImages.value = '';
    if (state.data) select(state.index);
  });

  if (window.INCEPTION_DETECTIONS === undefined) {
    showMessage('No detections.js next to this page: open a detections JSON with "open JSON".');
  } else {
    load(window.INCEPTION_DETECTIONS, 'detections.js', true);
  }
})();
