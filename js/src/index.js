// The front end of RoomWidget: a live view of a room's document.
//
// Each widget model keeps one Y.Doc in the browser, synced with the kernel's client over
// the widget's comm (see link.js). Views render that doc by kind (text, notebook, or a
// tree of shared types) and write the person's edits straight into it, so edits merge
// character by character with everyone else's instead of replacing the text.
import css from "./style.css";
import { h } from "./dom.js";
import { detectKind } from "./kind.js";
import { DocLink } from "./link.js";
import { renderNotebook } from "./notebook.js";
import { renderTree } from "./tree.js";
import { bindText, lineCount } from "./text.js";

const links = new WeakMap();

const STATUS_TEXT = {
  connecting: "connecting",
  connected: "syncing",
  synchronized: "connected",
  disconnected: "disconnected, reconnecting",
  closed: "closed (read-only)",
};

function linkOf(model) {
  let link = links.get(model);
  if (!link) {
    link = new DocLink(model);
    links.set(model, link);
  }
  return link;
}

function renderText(ytext, { maxHeight, readOnly }) {
  const editor = h("textarea", "jr-editor");
  editor.spellcheck = false;
  editor.readOnly = readOnly;
  editor.setAttribute("aria-label", "text");
  editor.style.maxHeight = maxHeight;
  const resize = () => {
    editor.rows = Math.max(4, lineCount(editor.value) + 1);
  };
  const unbind = bindText(ytext, editor, resize);
  resize();
  return { el: h("div", "jr-textroom", editor), destroy: unbind };
}

function renderHeader(model) {
  const dot = h("span", "jr-dot");
  const status = h("span", "jr-status");
  const room = h("span", "jr-room-id");
  const kind = h("span", "jr-kind");
  const peers = h("span", "jr-peers");
  const el = h("div", "jr-header", dot, status, room, kind, h("span", "jr-spacer"), peers);
  const showStatus = () => {
    const value = model.get("status");
    el.dataset.status = value;
    status.textContent = STATUS_TEXT[value] ?? value;
  };
  const showRoom = () => {
    room.textContent = model.get("room") || "(unnamed room)";
    room.title = "room";
  };
  const showPeers = () => {
    const others = model.get("peers") ?? [];
    const chips = others.map((peer) => {
      const chip = h("span", "jr-peer", peer.name);
      chip.title = `client ${peer.id}`;
      if (peer.color) chip.style.setProperty("--jr-peer-color", peer.color);
      return chip;
    });
    const label = others.length
      ? `${others.length} other${others.length === 1 ? "" : "s"} here:`
      : "nobody else here";
    peers.replaceChildren(h("span", "jr-peers-label", label), ...chips);
  };
  showStatus();
  showRoom();
  showPeers();
  model.on("change:status", showStatus);
  model.on("change:room", showRoom);
  model.on("change:peers", showPeers);
  return {
    el,
    setKind(value) {
      kind.textContent = value;
    },
    destroy() {
      model.off("change:status", showStatus);
      model.off("change:room", showRoom);
      model.off("change:peers", showPeers);
    },
  };
}

function render({ model, el }) {
  const link = linkOf(model);
  const style = h("style", null, css);
  const header = renderHeader(model);
  const body = h("div", "jr-body", h("div", "jr-empty", "loading the room's document…"));
  const root = h("div", "jr-widget", header.el, body);
  // Keys typed in the widget are the widget's: JupyterLab's notebook shortcuts (Enter,
  // Shift+Enter, d d, ...) would otherwise act on the notebook around it, and JupyterLab
  // cancels line breaks typed inside a notebook cell.
  const keepKeys = (event) => {
    if (event.key !== "Escape") event.stopPropagation();
  };
  root.addEventListener("keydown", keepKeys);
  el.replaceChildren(style, root);

  let kind = null;
  let view = null;
  let shown = null;
  let shownReadOnly = false;
  const show = () => {
    if (!link.synced) return;
    const next = detectKind(link.doc);
    // Once the kernel's client has closed, what is typed here would reach no one: the
    // view is built again without editing.
    const readOnly = model.get("status") === "closed";
    if (next === kind && link.doc === shown && readOnly === shownReadOnly) {
      view?.refresh?.();
      return;
    }
    shown = link.doc;
    shownReadOnly = readOnly;
    view?.destroy();
    kind = next;
    const options = { maxHeight: model.get("max_height"), readOnly };
    if (kind === "notebook") view = renderNotebook(link.doc, options);
    else if (kind === "text") view = renderText(link.doc.getText("source"), options);
    else view = renderTree(link.doc, options);
    root.dataset.kind = kind;
    header.setKind(kind);
    body.replaceChildren(view.el);
  };
  const unsubscribe = link.subscribe(show);
  model.on("change:status", show);
  show();
  return () => {
    root.removeEventListener("keydown", keepKeys);
    model.off("change:status", show);
    unsubscribe();
    header.destroy();
    view?.destroy();
  };
}

function initialize({ model }) {
  const link = linkOf(model);
  return () => {
    links.delete(model);
    link.destroy();
  };
}

export default { initialize, render };
