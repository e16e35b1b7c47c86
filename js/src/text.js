// A textarea bound to a Y.Text, character by character, both ways.
//
// What the person types becomes the smallest insert/delete that turns the old text into
// the new one (anchored at the caret, so typing a letter next to the same letter inserts
// where the caret is). What others change arrives as a Yjs delta and is applied to the
// textarea in place, with the selection moved along with the text around it: an insert
// before the caret shifts it, an insert after it leaves it, and the textarea's value is
// never replaced wholesale, so nothing typed is lost and the caret does not jump.
import * as Y from "yjs";

function isHighSurrogate(code) {
  return code >= 0xd800 && code <= 0xdbff;
}

function isLowSurrogate(code) {
  return code >= 0xdc00 && code <= 0xdfff;
}

// The edit that turns `before` into `after`, as [index, deleted count, inserted text],
// not reaching past `caret` (the caret's position in `after`) with the common suffix.
export function diff(before, after, caret) {
  let suffix = 0;
  const maxSuffix = Math.min(before.length, after.length - caret);
  while (
    suffix < maxSuffix &&
    before.charCodeAt(before.length - 1 - suffix) === after.charCodeAt(after.length - 1 - suffix)
  ) {
    suffix++;
  }
  let prefix = 0;
  const maxPrefix = Math.min(before.length, after.length) - suffix;
  while (prefix < maxPrefix && before.charCodeAt(prefix) === after.charCodeAt(prefix)) {
    prefix++;
  }
  // Never split a surrogate pair between what is kept and what changes.
  if (prefix > 0 && isHighSurrogate(before.charCodeAt(prefix - 1))) prefix--;
  if (suffix > 0 && isLowSurrogate(before.charCodeAt(before.length - suffix))) suffix--;
  return [prefix, before.length - prefix - suffix, after.slice(prefix, after.length - suffix)];
}

// Where position `pos` goes when `length` characters are inserted at `index`.
function shiftInsert(pos, index, length) {
  return pos > index ? pos + length : pos;
}

// Where position `pos` goes when `length` characters are deleted at `index`.
function shiftDelete(pos, index, length) {
  if (pos <= index) return pos;
  return pos >= index + length ? pos - length : index;
}

function isUndoKey(event) {
  return (event.ctrlKey || event.metaKey) && !event.altKey && event.key.toLowerCase() === "z";
}

function isRedoKey(event) {
  const key = event.key.toLowerCase();
  return (
    (event.ctrlKey || event.metaKey) &&
    !event.altKey &&
    ((key === "z" && event.shiftKey) || (key === "y" && !event.shiftKey))
  );
}

// Bind `textarea` to `ytext`. `onChange()` runs after each change, local or remote.
// Returns a function that unbinds.
export function bindText(ytext, textarea, onChange = () => {}) {
  const origin = { binding: "textarea" };
  const undoManager = new Y.UndoManager(ytext, { trackedOrigins: new Set([origin]) });
  textarea.value = ytext.toString();

  const onInput = () => {
    const before = ytext.toString();
    const after = textarea.value;
    if (before === after) return;
    const [index, deleted, inserted] = diff(before, after, textarea.selectionEnd);
    ytext.doc.transact(() => {
      if (deleted > 0) ytext.delete(index, deleted);
      if (inserted.length > 0) ytext.insert(index, inserted);
    }, origin);
    onChange();
  };

  const observer = (event, transaction) => {
    if (transaction.origin === origin) return;
    let { selectionStart: start, selectionEnd: end } = textarea;
    const direction = textarea.selectionDirection;
    const scrollTop = textarea.scrollTop;
    let index = 0;
    for (const op of event.delta) {
      if (op.retain !== undefined) {
        index += op.retain;
      } else if (op.insert !== undefined) {
        const text = typeof op.insert === "string" ? op.insert : "";
        textarea.setRangeText(text, index, index);
        start = shiftInsert(start, index, text.length);
        end = shiftInsert(end, index, text.length);
        index += text.length;
      } else if (op.delete !== undefined) {
        textarea.setRangeText("", index, index + op.delete);
        start = shiftDelete(start, index, op.delete);
        end = shiftDelete(end, index, op.delete);
      }
    }
    const text = ytext.toString();
    if (textarea.value !== text) {
      // Only embeds, which a textarea cannot show, get here.
      textarea.value = text;
    }
    if (transaction.origin === undoManager) {
      start = end = Math.min(index, text.length);
    }
    textarea.setSelectionRange(Math.min(start, text.length), Math.min(end, text.length), direction);
    textarea.scrollTop = scrollTop;
    onChange();
  };

  // Undo and redo take back this person's own edits only, not everyone's; a read-only
  // textarea has none to take back.
  const onKeydown = (event) => {
    if (textarea.readOnly) return;
    if (isRedoKey(event)) {
      event.preventDefault();
      undoManager.redo();
    } else if (isUndoKey(event)) {
      event.preventDefault();
      undoManager.undo();
    }
  };
  const onBeforeInput = (event) => {
    if (textarea.readOnly) return;
    if (event.inputType === "historyUndo") {
      event.preventDefault();
      undoManager.undo();
    } else if (event.inputType === "historyRedo") {
      event.preventDefault();
      undoManager.redo();
    }
  };

  textarea.addEventListener("input", onInput);
  textarea.addEventListener("keydown", onKeydown);
  textarea.addEventListener("beforeinput", onBeforeInput);
  ytext.observe(observer);
  return () => {
    ytext.unobserve(observer);
    textarea.removeEventListener("input", onInput);
    textarea.removeEventListener("keydown", onKeydown);
    textarea.removeEventListener("beforeinput", onBeforeInput);
    undoManager.destroy();
  };
}

// Lines in `text`, for sizing a textarea to its content.
export function lineCount(text) {
  let lines = 1;
  for (let i = text.indexOf("\n"); i !== -1; i = text.indexOf("\n", i + 1)) lines++;
  return lines;
}
