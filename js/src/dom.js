// A small helper for building elements.
export function h(tag, className, ...children) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  for (const child of children) {
    if (child !== null && child !== undefined) el.append(child);
  }
  return el;
}

// Run `fn` once before the next frame, however often it is asked for until then.
export function coalesce(fn) {
  let scheduled = false;
  return () => {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => {
      scheduled = false;
      fn();
    });
  };
}
