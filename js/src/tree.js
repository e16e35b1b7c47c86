// A free-form room as a tree of its shared types: Maps and Arrays open into their
// entries, Texts are editable in place, other values are shown as JSON. Each node
// observes its own type and updates only the entries that changed.
import * as Y from "yjs";
import { h } from "./dom.js";
import { rootKind, typedRoot } from "./kind.js";
import { bindText, lineCount } from "./text.js";

const PAGE = 100;

function describe(value) {
  if (value instanceof Uint8Array) return `${value.length} bytes`;
  if (value instanceof Y.Doc) return `subdocument ${value.guid}`;
  if (value === undefined) return "undefined";
  const json = JSON.stringify(value);
  return json.length > 200 ? `${json.slice(0, 200)}…` : json;
}

function typeName(value) {
  if (value instanceof Y.Map) return "Map";
  if (value instanceof Y.Array) return "Array";
  if (value instanceof Y.Text) return "Text";
  if (value instanceof Y.XmlFragment) return "XML";
  return null;
}

// A node for `value` labelled `label`: {el, destroy}. Its texts are not editable when
// `readOnly`.
function node(label, value, readOnly) {
  const name = typeName(value);
  const key = h("span", "jr-key", label);
  if (name === "Text") {
    const editor = h("textarea", "jr-text");
    editor.spellcheck = false;
    editor.setAttribute("aria-label", `${label}`);
    editor.readOnly = readOnly;
    const resize = () => {
      editor.rows = Math.min(lineCount(editor.value), 12);
    };
    const unbind = bindText(value, editor, resize);
    resize();
    return { el: h("div", "jr-node", key, h("span", "jr-type", "Text"), editor), destroy: unbind };
  }
  if (name === "XML") {
    const body = h("code", "jr-value");
    const show = () => {
      body.textContent = value.toString();
    };
    show();
    value.observeDeep(show);
    return {
      el: h("div", "jr-node", key, h("span", "jr-type", "XML"), body),
      destroy: () => value.unobserveDeep(show),
    };
  }
  if (name === "Map" || name === "Array") {
    return container(key, name, value, readOnly);
  }
  return { el: h("div", "jr-node", key, h("code", "jr-value", describe(value))), destroy() {} };
}

// A Map or an Array, open, with its entries as child nodes.
function container(key, name, type, readOnly) {
  const count = h("span", "jr-count");
  const summary = h("summary", null, key, h("span", "jr-type", name), count);
  const children = h("div", "jr-children");
  const details = h("details", "jr-node", summary, children);
  details.open = true;
  const showCount = () => {
    count.textContent = `${name === "Map" ? type.size : type.length}`;
  };

  if (name === "Map") {
    const entries = new Map();
    const place = (k) => {
      entries.get(k)?.destroy();
      entries.get(k)?.el.remove();
      entries.delete(k);
      if (!type.has(k)) return;
      const child = node(k, type.get(k), readOnly);
      entries.set(k, child);
      const next = [...entries.keys()].filter((other) => other > k).sort()[0];
      children.insertBefore(child.el, next === undefined ? null : entries.get(next).el);
    };
    for (const k of [...type.keys()].sort()) place(k);
    const observer = (event) => {
      for (const k of event.keysChanged) place(k);
      showCount();
    };
    type.observe(observer);
    showCount();
    return {
      el: details,
      destroy() {
        type.unobserve(observer);
        for (const child of entries.values()) child.destroy();
      },
    };
  }

  // An Array: its first PAGE items, then more on demand; inserts and deletes move the
  // nodes after them, whose labels (their indices) are refreshed.
  let shown = [];
  let limit = PAGE;
  const more = h("button", "jr-button jr-more");
  const render = () => {
    for (const child of shown) child.destroy();
    const items = type.toArray().slice(0, limit);
    shown = items.map((item, i) => node(String(i), item, readOnly));
    children.replaceChildren(...shown.map((child) => child.el));
    more.textContent = `show ${Math.min(PAGE, type.length - limit)} more`;
    if (type.length > limit) children.append(more);
    showCount();
  };
  more.onclick = () => {
    limit += PAGE;
    render();
  };
  const relabel = (from) => {
    for (let i = from; i < shown.length; i++) {
      const label = shown[i].el.querySelector(":scope > .jr-key, :scope > summary > .jr-key");
      if (label) label.textContent = String(i);
    }
  };
  const observer = (event) => {
    let index = 0;
    let first = Number.POSITIVE_INFINITY;
    for (const op of event.changes.delta) {
      if (op.retain !== undefined) {
        index += op.retain;
      } else if (op.insert !== undefined) {
        first = Math.min(first, index);
        const added = op.insert.map((item, i) => node(String(index + i), item, readOnly));
        const before = shown[index]?.el ?? (type.length > limit ? more : null);
        for (const child of added) children.insertBefore(child.el, before);
        shown.splice(index, 0, ...added);
        index += added.length;
      } else if (op.delete !== undefined) {
        first = Math.min(first, index);
        for (const child of shown.splice(index, op.delete)) {
          child.destroy();
          child.el.remove();
        }
      }
    }
    if (shown.length !== Math.min(type.length, limit)) {
      render();
    } else {
      relabel(first);
      showCount();
    }
  };
  render();
  type.observe(observer);
  return {
    el: details,
    destroy() {
      type.unobserve(observer);
      for (const child of shown) child.destroy();
    },
  };
}

// The whole document: one node per root type, and new roots as they appear.
export function renderTree(doc, { readOnly = false } = {}) {
  const list = h("div", "jr-tree");
  const empty = h("div", "jr-empty", "The room's document is empty.");
  const el = h("div", "jr-free", empty, list);
  const roots = new Map();
  const refresh = () => {
    for (const name of [...doc.share.keys()].sort()) {
      const known = roots.get(name);
      const kind = rootKind(doc.share.get(name));
      if (known && known.kind === kind) continue;
      const type = typedRoot(doc, name);
      if (type === null) continue;
      const child = node(name, type, readOnly);
      if (known) {
        known.node.destroy();
        known.node.el.replaceWith(child.el);
      } else {
        const next = [...roots.keys()].filter((other) => other > name).sort()[0];
        list.insertBefore(child.el, next === undefined ? null : roots.get(next).node.el);
      }
      roots.set(name, { kind, node: child });
    }
    empty.hidden = roots.size > 0;
  };
  refresh();
  return {
    el,
    refresh,
    destroy() {
      for (const { node: child } of roots.values()) child.destroy();
    },
  };
}
