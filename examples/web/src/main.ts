// The example app: sign up or in, add and complete todos, and read stats and the
// leaderboard with read-your-writes, all through @outboxtodo/client. It is served from
// another origin than the API, so every call is a real cross-origin request.
import { createTodoClient, freshness, type components, type Freshness, type Problem } from "@outboxtodo/client";

import { byId, form } from "./dom";

type User = components["schemas"]["User"];
type Todo = components["schemas"]["Todo"];

/** What survives a reload: the bearer token and who it belongs to. */
interface Session {
  token: string;
  user: Pick<User, "id" | "display_name">;
}

const sessionKey = "outboxtodo.session";
// A page of todos is enough for an example; the API pages with next_cursor beyond it.
const todoPageSize = 100;

// ?api= lets the same build talk to an API elsewhere (the end-to-end test's, on a port of its own).
const apiBase = new URLSearchParams(location.search).get("api") ?? "http://localhost:8080";

let session = loadSession();
const api = createTodoClient({ baseUrl: apiBase, token: () => session?.token });

/** An answer the API refused; its message is shown to the user as is. */
class Failure extends Error {}

function loadSession(): Session | undefined {
  const raw = localStorage.getItem(sessionKey);
  if (raw === null) return undefined;
  try {
    return JSON.parse(raw) as Session;
  } catch {
    localStorage.removeItem(sessionKey);
    return undefined;
  }
}

function saveSession(s: Session | undefined): void {
  session = s;
  if (s === undefined) localStorage.removeItem(sessionKey);
  else localStorage.setItem(sessionKey, JSON.stringify(s));
}

/**
 * The data of a call, or a Failure naming the problem the API answered (with each
 * invalid field). A 401 means the stored token no longer works (revoked, expired):
 * the user is signed out.
 */
function ok<T>(result: { data?: T; error?: unknown; response: Response }): T {
  if (result.data !== undefined) return result.data;
  if (result.response.status === 401 && session !== undefined) {
    endSession();
    throw new Failure("Your session has ended; sign in again.");
  }
  const p = result.error as Partial<Problem> | undefined;
  const fields = p?.errors?.map((e) => e.detail) ?? [];
  throw new Failure([p?.detail ?? p?.title ?? `HTTP ${result.response.status}`, ...fields].join(": "));
}

function say(message: string): void {
  const el = byId("message");
  el.textContent = message;
  el.hidden = message === "";
}

/** Runs an action of the user's, showing its failure instead of losing it in the console. */
async function act(action: () => Promise<void>): Promise<void> {
  say("");
  try {
    await action();
  } catch (err) {
    // fetch rejects with a TypeError when the browser withholds the answer (CORS) or gets none.
    say(err instanceof Failure ? err.message : `The API at ${apiBase} could not be reached (${String(err)}).`);
  }
}

async function signUp(data: FormData): Promise<void> {
  const created = ok(await api.POST("/v1/users", {
    body: { email: String(data.get("email")), display_name: String(data.get("display_name")), password: String(data.get("password")) },
  }));
  if (created.token === undefined) throw new Failure("the sign-up answered no token");
  await begin({ token: created.token, user: created.user });
}

async function signIn(data: FormData): Promise<void> {
  const issued = ok(await api.POST("/v1/sessions", {
    body: { email: String(data.get("email")), password: String(data.get("password")) },
  }));
  if (issued.token === undefined) throw new Failure("the sign-in answered no token");
  await begin({ token: issued.token, user: issued.user });
}

async function begin(s: Session): Promise<void> {
  saveSession({ token: s.token, user: { id: s.user.id, display_name: s.user.display_name } });
  for (const f of ["sign-up", "sign-in"]) form(f).reset();
  show();
  await refresh();
}

async function signOut(): Promise<void> {
  // Revoked, not only forgotten: a copy of the token left elsewhere stops working too.
  const { response } = await api.DELETE("/v1/users/me/tokens/current");
  if (!response.ok && response.status !== 401) throw new Failure(`sign-out answered HTTP ${response.status}`);
  endSession();
}

function endSession(): void {
  saveSession(undefined);
  api.resetConsistency();
  clearView();
  show();
}

/** Removes what the signed-in view showed, so that the next user never sees it. */
function clearView(): void {
  for (const id of ["todos", "leaders"]) byId(id).replaceChildren();
  for (const id of ["stats-open", "stats-completed", "stats-total", "my-rank", "stats-freshness", "leaderboard-freshness"]) {
    byId(id).textContent = "";
  }
  for (const id of ["stats", "leaderboard"]) delete byId(id).dataset.token;
}

async function addTodo(data: FormData): Promise<void> {
  ok(await api.POST("/v1/todos", { body: { title: String(data.get("title")) } }));
  form("add-todo").reset();
  await refresh();
}

async function setCompleted(todo: Todo, completed: boolean): Promise<void> {
  ok(await api.PATCH("/v1/todos/{id}", {
    params: { path: { id: todo.id }, header: { "If-Match": `"${todo.version}"` } },
    body: { completed },
  }));
  await refresh();
}

/** Reloads everything shown; the read-model reads carry the last write's consistency token. */
async function refresh(): Promise<void> {
  await Promise.all([loadTodos(), loadStats(), loadLeaderboard()]);
}

async function loadTodos(): Promise<void> {
  const page = ok(await api.GET("/v1/todos", { params: { query: { limit: todoPageSize } } }));
  const list = byId("todos");
  list.replaceChildren(...page.items.map((todo) => {
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = todo.completed;
    box.setAttribute("aria-label", `completed: ${todo.title}`);
    box.addEventListener("change", () => void act(() => setCompleted(todo, box.checked)));
    const title = document.createElement("span");
    title.textContent = todo.title;
    const label = document.createElement("label");
    label.append(box, " ", title);
    const item = document.createElement("li");
    item.dataset.id = todo.id;
    item.classList.toggle("done", todo.completed);
    item.append(label);
    return item;
  }));
}

async function loadStats(): Promise<void> {
  const sent = api.consistencyToken();
  const result = await api.GET("/v1/users/me/stats");
  const stats = ok(result);
  byId("stats-open").textContent = String(stats.open);
  byId("stats-completed").textContent = String(stats.completed);
  byId("stats-total").textContent = String(stats.total);
  showFreshness("stats", freshness(result.response), sent);
}

async function loadLeaderboard(): Promise<void> {
  const sent = api.consistencyToken();
  const result = await api.GET("/v1/leaderboard");
  const board = ok(result);
  byId("leaders").replaceChildren(...board.top.map((entry) => {
    const item = document.createElement("li");
    item.textContent = `${entry.display_name}: ${entry.completed} of ${entry.total} done`;
    item.classList.toggle("me", entry.user_id === session?.user.id);
    return item;
  }));
  byId("my-rank").textContent = board.me === null ? "You are not ranked yet." : `Your rank: ${board.me.rank}`;
  showFreshness("leaderboard", freshness(result.response), sent);
}

/**
 * Says how fresh a read-model answer is. The section also records the consistency token
 * it was read with (data-token), so that a reader (the end-to-end test) can tell the
 * answer to a write's read from an older one.
 */
function showFreshness(section: string, f: Freshness, sent: string | undefined): void {
  const el = byId(`${section}-freshness`);
  const as = f.watermark === undefined ? "" : ` Read model as of ${f.watermark.toLocaleTimeString()} (event ${f.sequence ?? "?"}).`;
  el.textContent = f.consistency === "fresh"
    ? `Includes your last change.${as}`
    : f.consistency === "stale"
      ? `Your last change is not in yet; it will show on the next read.${as}`
      : `No change of yours to wait for.${as}`;
  el.dataset.consistency = f.consistency ?? "none";
  byId(section).dataset.token = sent ?? "";
}

function show(): void {
  byId("signed-out").hidden = session !== undefined;
  byId("signed-in").hidden = session === undefined;
  byId("who").hidden = session === undefined;
  byId("who-name").textContent = session?.user.display_name ?? "";
}

function onSubmit(id: string, action: (data: FormData) => Promise<void>): void {
  const f = form(id);
  f.addEventListener("submit", (e) => {
    e.preventDefault();
    void act(() => action(new FormData(f)));
  });
}

onSubmit("sign-up", signUp);
onSubmit("sign-in", signIn);
onSubmit("add-todo", addTodo);
byId("sign-out").addEventListener("click", () => void act(signOut));
byId("api-origin").textContent = `API: ${apiBase}`;
show();
if (session !== undefined) void act(refresh);
