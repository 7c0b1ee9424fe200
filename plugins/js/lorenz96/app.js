// Lorenz-96 in JavaScript: dx_i/dt = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F on
// a periodic ring of `size` variables, integrated with classic RK4.
//
// Config: `F` (forcing, default 8), `size` (default 40, at least 4). The
// arithmetic is in the same order as plugins/lorenz96 (Rust), so both give
// the same bits. Built by plugins/build-js.sh with componentize-js, every
// WASI feature disabled: console.log, Date.now and Math.random are not
// there.

// Module-level state, set once by `init`.
let model = null;

// componentize-js lowers a thrown value to the `err` of a `result`; the
// error type here is a string, and any other thrown value (an Error) traps.
// So every export runs inside `guard`, which rethrows errors as strings.
function guard(body) {
  try {
    return body();
  } catch (e) {
    throw typeof e === "string" ? e : `JavaScript ${e?.name ?? "error"}: ${e?.message ?? String(e)}`;
  }
}

function number(config, key, fallback) {
  const value = config[key] ?? fallback;
  if (typeof value !== "number" || !Number.isFinite(value)) {
    throw `config key \`${key}\` must be a finite number, got ${JSON.stringify(value)}`;
  }
  return value;
}

function configure(text) {
  const config = text.trim() ? JSON.parse(text) : {};
  if (typeof config !== "object" || config === null || Array.isArray(config)) {
    throw "config must be a JSON object";
  }
  for (const key of Object.keys(config)) {
    if (key !== "F" && key !== "size") throw `unknown config key \`${key}\` (allowed: F, size)`;
  }
  const forcing = number(config, "F", 8.0);
  const size = number(config, "size", 40);
  if (!Number.isInteger(size) || size < 4) throw `config key \`size\` must be an integer of at least 4, got ${size}`;
  model = { forcing, size };
  return {
    name: "lorenz96-js",
    version: "0.1.0",
    stateSize: size,
    parameters: [{ name: "F", value: forcing, units: "1" }],
    defaultDt: 0.05,
    stateUnits: "1",
    timeUnits: "1",
    grid: { points: size, periodic: true },
  };
}

function tendency(x, forcing) {
  const n = x.length;
  const d = new Array(n);
  for (let i = 0; i < n; i++) {
    d[i] = (x[(i + 1) % n] - x[(i + n - 2) % n]) * x[(i + n - 1) % n] - x[i] + forcing;
  }
  return d;
}

function step(x, dt, forcing) {
  const h = 0.5 * dt;
  const k1 = tendency(x, forcing);
  const k2 = tendency(x.map((v, i) => v + h * k1[i]), forcing);
  const k3 = tendency(x.map((v, i) => v + h * k2[i]), forcing);
  const k4 = tendency(x.map((v, i) => v + dt * k3[i]), forcing);
  return x.map((v, i) => v + (dt / 6.0) * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]));
}

function advanceAll({ members, size, data }, dt) {
  if (model === null) throw "advance called before init";
  const out = new Float64Array(data.length);
  for (let m = 0; m < members; m++) {
    out.set(step(Array.from(data.slice(m * size, (m + 1) * size)), dt, model.forcing), m * size);
  }
  return { members, size, data: out };
}

export const forward = {
  init: (text) => guard(() => configure(text)),
  advance: (states, t, dt) => guard(() => advanceAll(states, dt)),
};
