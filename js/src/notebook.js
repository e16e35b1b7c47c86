// A notebook room (jupyter_ydoc's YNotebook) as its cells: each cell's type, prompt,
// editable source and a summary of its outputs.
//
// Cells are rendered lazily: every cell has a placeholder sized from its line count,
// and only the cells near the visible part of the list are built (and observed), so a
// notebook of thousands of cells opens at once. Changes update only what they touch: the
// cells array's delta inserts and removes rows, and each built cell observes its own map,
// source and outputs.
import * as Y from "yjs";
import { coalesce, h } from "./dom.js";
import { bindText, lineCount } from "./text.js";

const LINE_HEIGHT = 18;
const CELL_CHROME = 38;
const MAX_SUMMARY = 80;

function value(map, key) {
  return map instanceof Y.Map ? map.get(key) : map?.[key];
}

function plain(v) {
  if (v instanceof Y.AbstractType) return v.toJSON();
  return v;
}

function firstLine(text) {
  const s = String(Array.isArray(text) ? text.join("") : (text ?? "")).trim();
  const line = s.split("\n", 1)[0];
  return line.length > MAX_SUMMARY ? `${line.slice(0, MAX_SUMMARY)}…` : line;
}

// One line about one output.
export function describeOutput(output) {
  const type = plain(value(output, "output_type")) ?? "output";
  if (type === "stream") {
    return `${plain(value(output, "name")) ?? "stream"}: ${firstLine(plain(value(output, "text")))}`;
  }
  if (type === "error") {
    return `${plain(value(output, "ename"))}: ${firstLine(plain(value(output, "evalue")))}`;
  }
  const data = plain(value(output, "data")) ?? {};
  const mimes = Object.keys(data);
  const text = data["text/plain"];
  const rich = mimes.filter((m) => m !== "text/plain");
  const parts = [];
  if (text !== undefined) parts.push(firstLine(text));
  if (rich.length) parts.push(`[${rich.join(", ")}]`);
  return `${type === "execute_result" ? "result" : "display"}: ${parts.join(" ") || "(empty)"}`;
}

function sourceText(cell) {
  const source = value(cell, "source");
  return source instanceof Y.Text ? source.toString() : String(plain(source) ?? "");
}

function estimateHeight(cell) {
  return CELL_CHROME + LINE_HEIGHT * lineCount(sourceText(cell));
}

function newCodeCell() {
  const cell = new Y.Map();
  cell.set("id", crypto.randomUUID ? crypto.randomUUID() : Math.random().toString(36).slice(2));
  cell.set("cell_type", "code");
  cell.set("source", new Y.Text());
  cell.set("metadata", new Y.Map());
  cell.set("outputs", new Y.Array());
  cell.set("execution_count", null);
  return cell;
}

// The built view of one cell; returns a function that tears it down. A `readOnly` cell
// has no buttons and its source cannot be edited.
function buildCell(cells, cell, el, readOnly) {
  const prompt = h("span", "jr-prompt");
  const type = h("span", "jr-celltype");
  const add = h("button", "jr-button", "+");
  add.title = "Insert a code cell below";
  const remove = h("button", "jr-button", "×");
  remove.title = "Delete this cell";
  const buttons = readOnly ? [] : [add, remove];
  const head = h("div", "jr-cellhead", prompt, type, h("span", "jr-spacer"), ...buttons);
  const editor = h("textarea", "jr-source");
  editor.spellcheck = false;
  editor.setAttribute("aria-label", "cell source");
  const outputs = h("div", "jr-outputs");
  el.replaceChildren(head, editor, outputs);

  const indexOf = () => cells.toArray().indexOf(cell);
  add.onclick = () => {
    const index = indexOf();
    if (index !== -1) cells.insert(index + 1, [newCodeCell()]);
  };
  remove.onclick = () => {
    const index = indexOf();
    if (index !== -1) cells.delete(index, 1);
  };

  const showHead = () => {
    const cellType = plain(value(cell, "cell_type")) ?? "code";
    const count = plain(value(cell, "execution_count"));
    type.textContent = cellType;
    el.dataset.cellType = cellType;
    prompt.textContent = cellType === "code" ? `[${count ?? " "}]` : "";
  };

  let unbindSource = () => {};
  const bindSource = () => {
    unbindSource();
    const source = value(cell, "source");
    const resize = () => {
      editor.rows = lineCount(editor.value);
    };
    if (source instanceof Y.Text) {
      editor.readOnly = readOnly;
      unbindSource = bindText(source, editor, resize);
    } else {
      editor.readOnly = true;
      editor.value = String(plain(source) ?? "");
      unbindSource = () => {};
    }
    resize();
  };

  let youtputs = null;
  const showOutputs = coalesce(() => {
    const list = value(cell, "outputs");
    const items = list instanceof Y.Array ? list.toArray() : Array.isArray(list) ? list : [];
    outputs.replaceChildren(...items.map((o) => h("div", "jr-output", `→ ${describeOutput(o)}`)));
    outputs.hidden = items.length === 0;
  });
  const onOutputs = () => showOutputs();
  const bindOutputs = () => {
    youtputs?.unobserveDeep(onOutputs);
    const list = value(cell, "outputs");
    youtputs = list instanceof Y.Array ? list : null;
    youtputs?.observeDeep(onOutputs);
    showOutputs();
  };

  const onCell = (event) => {
    if (event.keysChanged.has("source")) bindSource();
    if (event.keysChanged.has("outputs")) bindOutputs();
    showHead();
  };

  showHead();
  bindSource();
  bindOutputs();
  if (cell instanceof Y.Map) cell.observe(onCell);
  return () => {
    if (cell instanceof Y.Map) cell.unobserve(onCell);
    youtputs?.unobserveDeep(onOutputs);
    unbindSource();
  };
}

export function renderNotebook(doc, { maxHeight, readOnly = false }) {
  const cells = doc.getArray("cells");
  const meta = doc.getMap("meta");
  const info = h("div", "jr-info");
  const list = h("div", "jr-cells");
  list.style.maxHeight = maxHeight;
  const el = h("div", "jr-notebook", info, list);
  const rows = [];
  const rowOf = new WeakMap();

  const build = (row) => {
    if (row.teardown) return;
    row.teardown = buildCell(cells, row.cell, row.el, readOnly);
    row.el.style.minHeight = "";
    row.el.classList.add("jr-built");
  };
  const unbuild = (row) => {
    if (!row.teardown || row.el.contains(document.activeElement)) return;
    row.el.style.minHeight = `${row.el.offsetHeight}px`;
    row.teardown();
    row.teardown = null;
    row.el.replaceChildren();
    row.el.classList.remove("jr-built");
  };
  const observer = new IntersectionObserver(
    (entries) => {
      for (const entry of entries) {
        const row = rowOf.get(entry.target);
        if (!row) continue;
        if (entry.isIntersecting) build(row);
        else unbuild(row);
      }
    },
    { root: list, rootMargin: "600px 0px" },
  );
  const makeRow = (cell) => {
    const row = { cell, el: h("div", "jr-cell"), teardown: null };
    row.el.style.minHeight = `${estimateHeight(cell)}px`;
    rowOf.set(row.el, row);
    observer.observe(row.el);
    return row;
  };
  const dropRow = (row) => {
    observer.unobserve(row.el);
    row.teardown?.();
    row.el.remove();
  };

  const showInfo = () => {
    const metadata = plain(meta.get("metadata")) ?? {};
    const kernel = metadata.kernelspec?.display_name ?? metadata.language_info?.name;
    const n = cells.length;
    info.textContent = `notebook · ${n} cell${n === 1 ? "" : "s"}${kernel ? ` · ${kernel}` : ""}`;
  };

  const onCells = (event) => {
    let index = 0;
    for (const op of event.changes.delta) {
      if (op.retain !== undefined) {
        index += op.retain;
      } else if (op.insert !== undefined) {
        const added = op.insert.map(makeRow);
        const before = rows[index]?.el ?? null;
        for (const row of added) list.insertBefore(row.el, before);
        rows.splice(index, 0, ...added);
        index += added.length;
      } else if (op.delete !== undefined) {
        for (const row of rows.splice(index, op.delete)) dropRow(row);
      }
    }
    showInfo();
  };
  const onMeta = () => showInfo();

  for (const cell of cells.toArray()) rows.push(makeRow(cell));
  list.append(...rows.map((row) => row.el));
  showInfo();
  cells.observe(onCells);
  meta.observeDeep(onMeta);

  return {
    el,
    destroy() {
      cells.unobserve(onCells);
      meta.unobserveDeep(onMeta);
      observer.disconnect();
      for (const row of rows) row.teardown?.();
    },
  };
}
