// The latent-plane explorer of vaecourse, run by the page with no kernel behind it.
// site_explorer() puts this script in the page after the explorer's JSON spec; the
// decoder runs in plain JavaScript: Float32Array weights, a matrix-vector loop per
// layer, float64 arithmetic, and an erf accurate to about 1e-15 for the exact GELU.
(function (root) {
  "use strict";
  const spec = JSON.parse(root.querySelector(".vx-data").textContent);
  function bytes(b64) {
    const s = atob(b64), out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }
  function floats(b64) {  // little-endian float32, whatever the machine's byte order
    const view = new DataView(bytes(b64).buffer), out = new Float32Array(view.byteLength / 4);
    for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(4 * i, true);
    return out;
  }
  function erf(x) {
    const a = Math.abs(x);
    let r;
    if (a < 2.5) {  // 2/sqrt(pi) exp(-a^2) sum 2^n a^(2n+1) / (1*3*...*(2n+1))
      let term = a, sum = a;
      for (let n = 1; term > 1e-17 * sum; n++) { term *= 2 * a * a / (2 * n + 1); sum += term; }
      r = 2 / Math.sqrt(Math.PI) * Math.exp(-a * a) * sum;
    } else if (a < 6) {  // erfc as a continued fraction, evaluated from its tail
      let f = a;
      for (let k = 60; k > 0; k--) f = a + (k / 2) / f;
      r = 1 - Math.exp(-a * a) / Math.sqrt(Math.PI) / f;
    } else r = 1;
    return x < 0 ? -r : r;
  }
  const ACT = {
    relu: (x) => (x > 0 ? x : 0),
    leaky_relu: (x, p) => (x > 0 ? x : p.slope * x),
    elu: (x, p) => (x > 0 ? x : p.alpha * Math.expm1(x)),
    gelu: (x) => 0.5 * x * (1 + erf(x / Math.SQRT2)),
    gelu_tanh: (x) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x))),
    tanh: (x) => Math.tanh(x),
    sigmoid: (x) => 1 / (1 + Math.exp(-x)),
    softplus: (x, p) => (p.beta * x > p.threshold ? x : Math.log1p(Math.exp(p.beta * x)) / p.beta),
    silu: (x) => x / (1 + Math.exp(-x)),
  };
  const layers = spec.layers.map((l) => (l.op === "linear" ? { ...l, w: floats(l.w), b: floats(l.b) } : l));
  const classes = spec.classes, nz = 2;
  function forward(input) {  // the raw network output, as PyTorch computes it
    let x = Float64Array.from(input);
    for (const l of layers) {
      if (l.op === "linear") {
        const y = new Float64Array(l.out);
        for (let o = 0; o < l.out; o++) {
          let s = l.b[o];
          const row = o * l.in;
          for (let i = 0; i < l.in; i++) s += l.w[row + i] * x[i];
          y[o] = s;
        }
        x = y;
      } else {
        const f = ACT[l.op];
        for (let i = 0; i < x.length; i++) x[i] = f(x[i], l);
      }
    }
    return x;
  }
  function decode(z, y) {  // the displayed intensities in [0, 1]
    const input = new Float64Array(spec.inputs);
    input[0] = z[0]; input[1] = z[1];
    if (classes) input[nz + (y || 0)] = 1;
    const raw = forward(input), out = new Float32Array(raw.length);
    for (let i = 0; i < raw.length; i++) {
      const v = spec.output === "logits" ? 1 / (1 + Math.exp(-raw[i])) : raw[i];
      out[i] = Math.min(1, Math.max(0, v));
    }
    return out;
  }

  const [x0, x1, y0, y1] = spec.extent, W = 340, H = 340, L = 40, R = 8, T = 8, B = 30;
  const pad = root.querySelector(".vx-pad"), img = root.querySelector(".vx-image");
  const coords = root.querySelector(".vx-coords"), picker = root.querySelector(".vx-picker");
  const dpr = window.devicePixelRatio || 1;
  pad.width = W * dpr; pad.height = H * dpr;
  const toX = (v) => L + ((v - x0) / (x1 - x0)) * (W - L - R);
  const toY = (v) => H - B - ((v - y0) / (y1 - y0)) * (H - T - B);
  const fromX = (px) => x0 + ((px - L) / (W - L - R)) * (x1 - x0);
  const fromY = (py) => y0 + ((H - B - py) / (H - T - B)) * (y1 - y0);
  function ticks(lo, hi) {
    const raw = (hi - lo) / 5, p = Math.pow(10, Math.floor(Math.log10(raw))), m = raw / p;
    const step = (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p, out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(Math.abs(v) < 1e-9 ? 0 : v);
    return out;
  }
  const back = document.createElement("canvas");  // the scatter, drawn once
  back.width = pad.width; back.height = pad.height;
  (function drawBack() {
    const c = back.getContext("2d");
    c.scale(dpr, dpr);
    c.fillStyle = "#fff"; c.fillRect(0, 0, W, H);
    c.strokeStyle = "#eee"; c.fillStyle = "#444"; c.font = "11px sans-serif";
    c.textAlign = "center";
    for (const v of ticks(x0, x1)) {
      c.beginPath(); c.moveTo(toX(v), T); c.lineTo(toX(v), H - B); c.stroke();
      c.fillText(+v.toFixed(2), toX(v), H - B + 13);
    }
    c.textAlign = "right";
    for (const v of ticks(y0, y1)) {
      c.beginPath(); c.moveTo(L, toY(v)); c.lineTo(W - R, toY(v)); c.stroke();
      c.fillText(+v.toFixed(2), L - 4, toY(v) + 4);
    }
    c.textAlign = "center"; c.font = "13px sans-serif";
    c.fillText("z\u2081", (L + W - R) / 2, H - 3);
    c.save(); c.translate(11, (T + H - B) / 2); c.rotate(-Math.PI / 2); c.fillText("z\u2082", 0, 0); c.restore();
    const pts = new DataView(bytes(spec.points).buffer), labels = bytes(spec.labels);
    c.globalAlpha = 0.55;
    for (let i = 0; i < labels.length; i++) {
      const u = pts.getUint16(4 * i, true) / 65535, v = pts.getUint16(4 * i + 2, true) / 65535;
      c.fillStyle = spec.colors[labels[i] % spec.colors.length];
      c.fillRect(toX(x0 + u * (x1 - x0)) - 1, toY(y0 + v * (y1 - y0)) - 1, 2, 2);
    }
    c.globalAlpha = 1; c.strokeStyle = "#999"; c.strokeRect(L, T, W - L - R, H - T - B);
  })();
  function add(parent, tag, text) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    return parent.appendChild(e);
  }
  const legend = root.querySelector(".vx-legend");
  add(legend, "span", "test codes by digit:");
  for (const k of spec.legend) {
    const item = add(legend, "span");
    add(item, "i").style.background = spec.colors[k % spec.colors.length];
    item.appendChild(document.createTextNode(String(k)));
  }
  root.querySelector(".vx-title").textContent = spec.title;

  const state = { z: spec.start.slice(), y: 0 };
  let pending = false;
  function draw() {
    pending = false;
    const c = pad.getContext("2d");
    c.setTransform(1, 0, 0, 1, 0, 0); c.drawImage(back, 0, 0); c.scale(dpr, dpr);
    const px = toX(state.z[0]), py = toY(state.z[1]);
    c.lineWidth = 3; c.strokeStyle = "#fff";
    c.beginPath(); c.arc(px, py, 7, 0, 2 * Math.PI); c.stroke();
    c.lineWidth = 2; c.strokeStyle = "#000";
    c.beginPath(); c.arc(px, py, 7, 0, 2 * Math.PI); c.stroke();
    c.beginPath(); c.moveTo(px - 11, py); c.lineTo(px - 4, py); c.moveTo(px + 4, py); c.lineTo(px + 11, py);
    c.moveTo(px, py - 11); c.lineTo(px, py - 4); c.moveTo(px, py + 4); c.lineTo(px, py + 11); c.stroke();
    const p = decode(state.z, state.y), g = img.getContext("2d"), data = g.createImageData(28, 28);
    for (let i = 0; i < p.length; i++) {  // black ink on white, as in the book's figures
      const v = Math.round(255 * (1 - p[i]));
      data.data[4 * i] = data.data[4 * i + 1] = data.data[4 * i + 2] = v; data.data[4 * i + 3] = 255;
    }
    g.putImageData(data, 0, 0);
    const f = (v) => (v < 0 ? "\u2212" : "\u2007") + Math.abs(v).toFixed(2);
    coords.textContent = "z\u2081 = " + f(state.z[0]) + ", z\u2082 = " + f(state.z[1]) +
      (classes ? "\nclass " + classes[state.y] : "");
    pad.setAttribute("aria-valuetext", coords.textContent);
  }
  function set(z, y) {
    state.z = [Math.min(x1, Math.max(x0, z[0])), Math.min(y1, Math.max(y0, z[1]))];
    if (classes && y !== undefined) {
      state.y = y;
      picker.querySelectorAll("button").forEach((b, k) => b.setAttribute("aria-pressed", k === y));
    }
    if (!pending) { pending = true; requestAnimationFrame(draw); }
  }
  function pointTo(e) {
    const r = pad.getBoundingClientRect();
    set([fromX(((e.clientX - r.left) * W) / r.width), fromY(((e.clientY - r.top) * H) / r.height)]);
  }
  let dragging = false;
  pad.addEventListener("pointerdown", (e) => {
    dragging = true; pad.setPointerCapture(e.pointerId); pointTo(e); e.preventDefault();
  });
  pad.addEventListener("pointermove", (e) => { if (dragging) pointTo(e); });
  pad.addEventListener("pointerup", () => { dragging = false; });
  pad.addEventListener("pointercancel", () => { dragging = false; });
  pad.addEventListener("keydown", (e) => {
    const k = e.shiftKey ? 0.1 : 0.02, dx = k * (x1 - x0), dy = k * (y1 - y0);
    const move = { ArrowLeft: [-dx, 0], ArrowRight: [dx, 0], ArrowUp: [0, dy], ArrowDown: [0, -dy] }[e.key];
    if (move) { set([state.z[0] + move[0], state.z[1] + move[1]]); e.preventDefault(); }
  });
  if (classes) {
    add(picker, "div", "class");
    classes.forEach((name, k) => {
      const b = add(picker, "button", name);
      b.type = "button";
      b.addEventListener("click", () => set(state.z, k));
    });
  }
  root.querySelector(".vx-note").textContent = classes
    ? "Drag over the plane (or use the arrow keys) to move z; pick a class."
    : "Drag over the plane (or use the arrow keys) to move z.";
  set(state.z, classes ? 0 : undefined);
  window.vaecourseExplorers = window.vaecourseExplorers || {};
  window.vaecourseExplorers[root.id] = {
    decode, forward, set, erf, element: root,
    state: () => ({ z: state.z.slice(), y: classes ? state.y : null }),
  };
})((document.currentScript && document.currentScript.parentNode) || document.getElementById("@ID@"));
