// What kind of document a room holds, from its shape: a notebook (jupyter_ydoc's
// YNotebook: a `cells` array and a `meta` map), a text file (YUnicode: a `source` text),
// or free-form shared state.
import * as Y from "yjs";

// The kind of a root type: "map", "array", "text", "xml", or null while it is empty.
// A root that arrived in an update from elsewhere has no type of its own in Yjs until
// someone asks for one, so it is read from what its items hold.
export function rootKind(type) {
  if (type instanceof Y.Text) return "text";
  if (type instanceof Y.Array) return "array";
  if (type instanceof Y.Map) return "map";
  if (type instanceof Y.XmlFragment) return "xml";
  if (type._map.size > 0) return "map";
  for (let item = type._start; item !== null; item = item.right) {
    const content = item.content;
    if (content instanceof Y.ContentDeleted) continue;
    if (
      content instanceof Y.ContentString ||
      content instanceof Y.ContentFormat ||
      content instanceof Y.ContentEmbed
    ) {
      return "text";
    }
    if (
      content instanceof Y.ContentType &&
      (content.type instanceof Y.XmlElement || content.type instanceof Y.XmlText)
    ) {
      return "xml";
    }
    return "array";
  }
  return null;
}

// The root type `name` of `doc`, typed by its kind (null when it is empty or absent).
export function typedRoot(doc, name) {
  if (!doc.share.has(name)) return null;
  switch (rootKind(doc.share.get(name))) {
    case "text":
      return doc.getText(name);
    case "array":
      return doc.getArray(name);
    case "map":
      return doc.getMap(name);
    case "xml":
      return doc.getXmlFragment(name);
    default:
      return null;
  }
}

function is(doc, name, ...kinds) {
  return doc.share.has(name) && kinds.includes(rootKind(doc.share.get(name)));
}

export function detectKind(doc) {
  if (is(doc, "cells", "array", null) && is(doc, "meta", "map", null)) return "notebook";
  if (is(doc, "meta", "map") && doc.getMap("meta").has("nbformat")) return "notebook";
  if (is(doc, "source", "text")) return "text";
  return "free";
}
