#!/usr/bin/env node
// Runs one Python script under the official MicroPython WebAssembly port, with the repo's
// protocol/ and firmware/ trees mounted at /lib/plugpay/, so CI exercises the real
// interpreter rather than CPython pretending to be it.
//
// Usage: node run.mjs [--heap BYTES] [--root REPO] [--file DEST=SRC ...] SCRIPT.py
//
// Why not the package's own CLI: it reads stdin instead of the file whenever stdin is not a
// TTY (CI has none), cannot mount files, and starts with a 128 KB heap.
//
// Exit codes: 0 success (or SystemExit(0/None)), N for SystemExit(N), 1 uncaught Python
// exception (traceback on stderr), 2 harness error (bad arguments, missing port, crash).
// The wasm FS: the script and relative --file destinations live in /run, the cwd, which is
// sys.path's '' entry, so they import by plain name. The port's heap starts at --heap but
// grows on demand (split heap), so --heap is not a memory cap.
//
// GC caveat of this port: gc.collect() inside Python only flags a collection, done when
// control returns to JS. A script that defines a zero-argument __harness_next__ gets it
// called repeatedly (each call its own top-level entry, so garbage is freed in between)
// until it returns a falsy value; mpyunit uses this to measure live heap per test.

import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const PORT_PKG = path.join("node_modules", "@micropython", "micropython-webassembly-pyscript");
const MOUNTS = ["protocol", "firmware", "boards"]; // repo folder -> /lib/plugpay/<folder>
const RUN_DIR = "/run";

class HarnessError extends Error {}

function usage() {
  return "usage: node run.mjs [--heap BYTES] [--root REPO] [--file DEST=SRC ...] SCRIPT.py";
}

function parseSize(text) {
  const m = /^(\d+)([kKmM]?)$/.exec(text || "");
  if (!m) throw new HarnessError(`--heap wants a byte count like 1048576, 512k or 4m, got ${JSON.stringify(text)}`);
  const mult = { "": 1, k: 1024, m: 1048576 }[m[2].toLowerCase()];
  return parseInt(m[1], 10) * mult;
}

function parseArgs(argv) {
  const opts = { heap: 1 << 20, root: path.resolve(HERE, "..", ".."), files: [], script: null };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new HarnessError(`${arg} needs a value\n${usage()}`);
      return argv[++i];
    };
    if (arg === "--heap") opts.heap = parseSize(value());
    else if (arg === "--root") opts.root = path.resolve(value());
    else if (arg === "--file") {
      const spec = value();
      const eq = spec.indexOf("=");
      if (eq <= 0 || eq === spec.length - 1) throw new HarnessError(`--file wants DEST=SRC, got ${JSON.stringify(spec)}`);
      opts.files.push([spec.slice(0, eq), spec.slice(eq + 1)]);
    } else if (arg === "-h" || arg === "--help") {
      process.stdout.write(usage() + "\n");
      process.exit(0);
    } else if (arg.startsWith("--")) throw new HarnessError(`unknown option ${arg}\n${usage()}`);
    else if (opts.script === null) opts.script = arg;
    else throw new HarnessError(`only one SCRIPT allowed, got ${JSON.stringify(arg)} too\n${usage()}`);
  }
  if (opts.script === null) throw new HarnessError(usage());
  return opts;
}

function portModulePath() {
  const base = process.env.PLUGPAY_MICROPYTHON_DIR ? path.resolve(process.env.PLUGPAY_MICROPYTHON_DIR) : HERE;
  const file = path.join(base, PORT_PKG, "micropython.mjs");
  if (!fs.existsSync(file)) {
    throw new HarnessError(
      `MicroPython WebAssembly port not found at ${file}; install it with ` +
        "`npm ci --prefix tools/micropython` (or point PLUGPAY_MICROPYTHON_DIR at the folder holding node_modules)",
    );
  }
  return file;
}

// Bytes -> whole lines on our own stream; the port's linebuffer mode drops a final
// unterminated line, so buffer here and flush at exit.
function lineSink(stream) {
  let buf = [];
  const flush = () => {
    if (buf.length) stream.write(Buffer.from(buf));
    buf = [];
  };
  const put = (bytes) => {
    for (const b of bytes) {
      buf.push(b);
      if (b === 10 || buf.length >= 65536) flush();
    }
  };
  return { put, flush };
}

function mkdirs(FS, dir) {
  FS.mkdirTree(dir);
}

function copyTree(FS, srcDir, destDir) {
  let count = 0;
  for (const entry of fs.readdirSync(srcDir, { withFileTypes: true })) {
    if (entry.name === "__pycache__" || entry.name.startsWith(".")) continue;
    const src = path.join(srcDir, entry.name);
    const dest = `${destDir}/${entry.name}`;
    if (entry.isDirectory()) {
      count += copyTree(FS, src, dest);
    } else if (entry.isFile() && entry.name.endsWith(".py")) {
      mkdirs(FS, destDir);
      FS.writeFile(dest, fs.readFileSync(src));
      count++;
    }
  }
  return count;
}

function wasmPath(dest) {
  const p = dest.startsWith("/") ? path.posix.normalize(dest) : path.posix.join(RUN_DIR, dest);
  return p;
}

// Runs the script as __main__ in its own globals, with the host path as its code filename
// so tracebacks point at the real file; SystemExit becomes an exit code, input() sees EOF.
const WRAPPER = (wasmScript, shownName) => `
import sys, builtins
def _plugpay_no_input(*args):
    raise EOFError("no stdin under the MicroPython harness")
builtins.input = _plugpay_no_input
if hasattr(sys, "argv"):
    sys.argv[:] = [${JSON.stringify(wasmScript)}]
_plugpay_exit = 0
_plugpay_more = False
_plugpay_g = {"__name__": "__main__", "__file__": ${JSON.stringify(wasmScript)}}
def _plugpay_call(fn, *args):
    global _plugpay_exit, _plugpay_more
    try:
        _plugpay_more = bool(fn(*args))
    except SystemExit as _e:
        _plugpay_more = False
        _c = _e.args[0] if _e.args else None
        if _c is None:
            _plugpay_exit = 0
        elif isinstance(_c, int) and not isinstance(_c, bool):
            _plugpay_exit = _c
        else:
            print(_c, file=sys.stderr)
            _plugpay_exit = 1
def _plugpay_main():
    with open(${JSON.stringify(wasmScript)}) as f:
        code = compile(f.read(), ${JSON.stringify(shownName)}, "exec")
    exec(code, _plugpay_g)
    return "__harness_next__" in _plugpay_g
def _plugpay_tick():
    _plugpay_call(_plugpay_g["__harness_next__"])
_plugpay_call(_plugpay_main)
`;

// The wrapper's frames (all it runs is named <stdin>) are noise in every traceback.
function cleanTraceback(message) {
  return message.replace(/^  File "<stdin>", line \d+, in \S+\n/gm, "");
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (err) {
    if (!(err instanceof HarnessError)) throw err;
    process.stderr.write(`run.mjs: ${err.message}\n`);
    return 2;
  }
  const out = lineSink(process.stdout);
  const err = lineSink(process.stderr);
  const flushAll = () => {
    out.flush();
    err.flush();
  };
  let mp;
  let wasmScript;
  try {
    if (!fs.existsSync(opts.script)) throw new HarnessError(`script not found: ${opts.script}`);
    const scriptSrc = fs.readFileSync(opts.script);
    const { loadMicroPython } = await import(pathToFileURL(portModulePath()).href);
    mp = await loadMicroPython({
      heapsize: opts.heap,
      stdin: () => null, // EOF: never touch the process's stdin
      stdout: (bytes) => out.put(bytes),
      stderr: (bytes) => err.put(bytes),
      linebuffer: false,
    });
    const FS = mp.FS;
    for (const name of MOUNTS) {
      const src = path.join(opts.root, name);
      if (fs.existsSync(src)) copyTree(FS, src, `/lib/plugpay/${name}`);
    }
    mkdirs(FS, RUN_DIR);
    for (const [dest, src] of opts.files) {
      if (!fs.existsSync(src)) throw new HarnessError(`--file source not found: ${src}`);
      const target = wasmPath(dest);
      mkdirs(FS, path.posix.dirname(target));
      FS.writeFile(target, fs.readFileSync(src));
    }
    wasmScript = path.posix.join(RUN_DIR, path.basename(opts.script));
    FS.writeFile(wasmScript, scriptSrc);
    FS.chdir(RUN_DIR);
  } catch (e) {
    flushAll();
    process.stderr.write(`run.mjs: ${e instanceof HarnessError ? e.message : e.stack || e}\n`);
    return 2;
  }
  try {
    mp.runPython(WRAPPER(wasmScript, opts.script));
    // A script that defines __harness_next__ gets it called until it returns falsy, each
    // call a separate top-level entry: this port's gc.collect() only flags a collection,
    // which runs when control returns to JS, so this is where memory is really freed.
    while (mp.globals.get("_plugpay_more")) mp.runPython("_plugpay_tick()");
    const code = mp.globals.get("_plugpay_exit");
    flushAll();
    return typeof code === "number" ? code : 0;
  } catch (e) {
    flushAll();
    if (e && e.name === "PythonError") {
      process.stderr.write(cleanTraceback(String(e.message)));
      return 1;
    }
    process.stderr.write(`run.mjs: MicroPython crashed (interpreter fault, not a Python exception): ${e && e.stack ? e.stack : e}\n`);
    return 2;
  }
}

// Exit explicitly: a script may leave JS handles (timers via the js module) that would
// otherwise keep Node alive. stdout/stderr writes to pipes and files are synchronous on Linux.
main().then(
  (code) => process.exit(code),
  (e) => {
    process.stderr.write(`run.mjs: ${e && e.stack ? e.stack : e}\n`);
    process.exit(2);
  },
);
