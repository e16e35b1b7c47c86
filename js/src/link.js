// The browser's copy of the room's document, kept in sync with the kernel's client over
// the widget's comm. Messages are {type} objects whose payloads travel as binary buffers:
//   browser -> kernel  {type: "sync", nonce} [state vector]   ask for what the browser lacks
//                      {type: "update"} [update]               an edit made in the browser
//   kernel -> browser  {type: "sync", nonce} [update, state vector]  the answer to a sync
//                      {type: "update"} [update]               any change of the kernel's doc
//                      {type: "reset"} [update]                the room's history started anew:
//                                                              this replaces the browser's doc
import * as Y from "yjs";

// The origin of every transaction that applies what the kernel sent, so that it is not
// sent back.
export const KERNEL = Symbol("kernel");

const EMPTY_UPDATE_LENGTH = 2;

function bytes(view) {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

export class DocLink {
  constructor(model) {
    this.model = model;
    this.synced = false;
    this.listeners = new Set();
    this.nonce = Math.random().toString(36).slice(2);
    this.onMessage = (msg, buffers) => this.receive(msg, buffers);
    this.onUpdate = (update, origin) => {
      if (origin !== KERNEL) {
        model.send({ type: "update" }, undefined, [update]);
      }
    };
    model.on("msg:custom", this.onMessage);
    this.doc = this.newDoc();
    model.send({ type: "sync", nonce: this.nonce }, undefined, [Y.encodeStateVector(this.doc)]);
  }

  newDoc() {
    const doc = new Y.Doc();
    doc.on("update", this.onUpdate);
    return doc;
  }

  // Views bound to the old doc must be built again: compare `link.doc` to tell.
  replaceDoc(update) {
    this.doc.off("update", this.onUpdate);
    this.doc.destroy();
    this.doc = this.newDoc();
    Y.applyUpdate(this.doc, update, KERNEL);
    this.synced = true;
  }

  receive(msg, buffers) {
    if (!msg || typeof msg.type !== "string" || !buffers || buffers.length === 0) {
      return;
    }
    if (msg.type === "update") {
      Y.applyUpdate(this.doc, bytes(buffers[0]), KERNEL);
    } else if (msg.type === "reset") {
      this.replaceDoc(bytes(buffers[0]));
    } else if (msg.type === "sync") {
      Y.applyUpdate(this.doc, bytes(buffers[0]), KERNEL);
      if (msg.nonce !== this.nonce || buffers.length < 2) {
        return this.emit();
      }
      const missing = Y.encodeStateAsUpdate(this.doc, bytes(buffers[1]));
      if (missing.length > EMPTY_UPDATE_LENGTH) {
        this.model.send({ type: "update" }, undefined, [missing]);
      }
      this.synced = true;
    } else {
      return;
    }
    this.emit();
  }

  // Call listener() after every change the kernel sent; returns a function that stops it.
  subscribe(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit() {
    for (const listener of [...this.listeners]) {
      listener();
    }
  }

  destroy() {
    this.model.off("msg:custom", this.onMessage);
    this.doc.off("update", this.onUpdate);
    this.listeners.clear();
    this.doc.destroy();
  }
}
