// The "your devices" page. It uses the same JSON routes as any client, in cookie
// transport: the browser keeps the tokens in HttpOnly cookies that this script never
// sees, and sends them itself. Everything shown is written with textContent, never as
// HTML, so a device name cannot inject markup.
"use strict";

const $ = (id) => document.getElementById(id);

// The page's state, for people (what is shown) and tests (`data-state` on <body>).
function setState(state) {
  document.body.dataset.state = state;
  $("sign-in").hidden = state !== "signed-out";
  $("signed-in").hidden = state !== "signed-in";
}

function say(text) {
  $("status").textContent = text || "";
}

// One request to the API, with the cookies (same origin) and a JSON body when given.
function call(method, path, body) {
  const init = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  return fetch(path, init);
}

// A request that needs the access cookie. When it has expired (401), the refresh cookie
// gets a new pair once and the request is sent again; when that fails too, the browser
// is signed out.
async function authed(method, path, body) {
  let response = await call(method, path, body);
  if (response.status === 401) {
    const refreshed = await call("POST", "/auth/refresh");
    if (!refreshed.ok) {
      return response;
    }
    response = await call(method, path, body);
  }
  return response;
}

async function problem(response) {
  try {
    const body = await response.json();
    return body.message || body.error || `error ${response.status}`;
  } catch {
    return `error ${response.status}`;
  }
}

function when(text) {
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? text : date.toLocaleString();
}

function detail(list, term, value) {
  const dt = document.createElement("dt");
  dt.textContent = term;
  const dd = document.createElement("dd");
  dd.textContent = value;
  list.append(dt, dd);
}

function sessionItem(session) {
  const item = document.createElement("li");
  item.className = "session";
  item.dataset.sessionId = session.id;
  item.dataset.current = String(session.current);

  const device = document.createElement("div");
  device.className = "device";
  device.textContent = session.device_label || "Unknown device";
  if (session.current) {
    const mark = document.createElement("span");
    mark.className = "this-device";
    mark.textContent = "This device";
    device.append(mark);
  }
  item.append(device);

  const list = document.createElement("dl");
  if (session.device_name) {
    detail(list, "Name", session.device_name);
  }
  detail(list, "IP", session.ip || "unknown");
  detail(list, "Last used", when(session.last_used_at));
  detail(list, "Signed in", when(session.created_at));
  item.append(list);

  if (!session.current) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "sign-out-session secondary";
    button.textContent = "Sign out";
    button.addEventListener("click", () => act("DELETE", `/sessions/${encodeURIComponent(session.id)}`));
    item.append(button);
  }
  return item;
}

// Shows the signed-in view with the live sessions, or the sign-in form.
async function show() {
  const me = await authed("GET", "/me");
  if (me.status === 401) {
    setState("signed-out");
    return;
  }
  if (!me.ok) {
    say(await problem(me));
    return;
  }
  const sessions = await authed("GET", "/sessions");
  if (!sessions.ok) {
    say(await problem(sessions));
    return;
  }
  const { email } = await me.json();
  const list = (await sessions.json()).sessions;
  $("who").textContent = email;
  $("sessions").replaceChildren(...list.map(sessionItem));
  setState("signed-in");
}

// A button's action, then the page as it is now.
async function act(method, path) {
  say("");
  const response = await authed(method, path);
  if (!response.ok) {
    say(await problem(response));
  }
  await show();
}

async function signIn(event) {
  event.preventDefault();
  say("");
  const button = $("sign-in-button");
  button.disabled = true;
  try {
    const body = {
      email: $("email").value,
      password: $("password").value,
      transport: "cookie",
    };
    const name = $("device-name").value.trim();
    if (name) {
      body.device_name = name;
    }
    const response = await call("POST", "/auth/login", body);
    if (!response.ok) {
      say(await problem(response));
      return;
    }
    $("password").value = "";
    await show();
  } finally {
    button.disabled = false;
  }
}

async function signOut() {
  say("");
  const response = await authed("POST", "/auth/logout");
  if (!response.ok && response.status !== 401) {
    say(await problem(response));
    return;
  }
  setState("signed-out");
}

$("sign-in").addEventListener("submit", signIn);
$("sign-out").addEventListener("click", signOut);
$("sign-out-others").addEventListener("click", () => act("POST", "/sessions/revoke-others"));
show().catch((error) => say(String(error)));
