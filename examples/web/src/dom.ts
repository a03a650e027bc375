// Lookups of the page's fixed elements (index.html): a missing one is a bug of the page,
// reported at once rather than as a null dereference later.

export function byId(id: string): HTMLElement {
  const el = document.getElementById(id);
  if (el === null) throw new Error(`index.html has no #${id}`);
  return el;
}

export function form(id: string): HTMLFormElement {
  const el = byId(id);
  if (!(el instanceof HTMLFormElement)) throw new Error(`#${id} is not a form`);
  return el;
}
