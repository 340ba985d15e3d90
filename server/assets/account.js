// The account page. It uses the same JSON routes as any client, in cookie transport: the
// browser keeps the tokens in HttpOnly cookies that this script never sees, and sends
// them itself. Everything shown is written with textContent, never as HTML, so a device
// name cannot inject markup.
//
// The page never shows a state it has not just checked: it asks the server again when
// the browser brings it back (Back, bfcache) and when its tab becomes visible; any 401 is
// "signed out", with the reason; a server that does not answer is said so, with a retry.
"use strict";

const $ = (id) => document.getElementById(id);

// Whether this tab last showed this browser signed in, so that a later 401 (also after
// Back or a reload) can say the session ended elsewhere. Kept for the tab's life.
const SIGNED_IN_KEY = "portcullis.account.signed-in";
function remember(signedIn) {
  try {
    if (signedIn) {
      sessionStorage.setItem(SIGNED_IN_KEY, "1");
    } else {
      sessionStorage.removeItem(SIGNED_IN_KEY);
    }
  } catch {
    // Storage may be off; the reason is then only told within one page load.
  }
  shownSignedIn = signedIn;
}
let shownSignedIn = (() => {
  try {
    return sessionStorage.getItem(SIGNED_IN_KEY) === "1";
  } catch {
    return false;
  }
})();
// The number of other devices, for the confirmation of "Sign out everywhere else".
let others = 0;

class Offline extends Error {}

// The user closed the prompt to prove who they are again: nothing was done.
class Declined extends Error {}

// The page's state, for people (what is shown) and tests (`data-state` on <body>):
// loading, signed-out, signed-in, offline.
function setState(state) {
  document.body.dataset.state = state;
  $("signed-out").hidden = state !== "signed-out";
  $("signed-in").hidden = state !== "signed-in";
  $("retry-row").hidden = state !== "offline";
  if (state === "signed-in") {
    remember(true);
  } else if (state === "signed-out") {
    remember(false);
  }
}

// What happened, in the polite status region (always in the page, empty when quiet).
function say(text) {
  $("error").textContent = "";
  $("status").textContent = text || "";
}

// What went wrong, in the alert region; focus goes to it so that it is read at once.
function fail(text) {
  $("status").textContent = "";
  const error = $("error");
  error.textContent = text;
  error.tabIndex = -1;
  error.focus();
}

function focus(id) {
  const target = $(id);
  if (target) {
    target.focus();
  }
}

// One request to the API, with the cookies (same origin), never from the cache, and a
// JSON body when given. A request that gets no answer at all throws Offline.
async function call(method, path, body) {
  const init = { method, credentials: "same-origin", cache: "no-store", headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  try {
    return await fetch(path, init);
  } catch {
    throw new Offline("The server did not answer.");
  }
}

// A request that needs the access cookie. When it has expired (401), the refresh cookie
// gets a new pair once and the request is sent again. When the server asks for a fresh
// proof of who the user is (401 `insufficient_user_authentication`, RFC 9470: a
// privileged action long after sign-in), that is a step-up prompt, never "signed out":
// the request is sent again once the user proved it, and Declined is thrown if they
// closed the prompt.
async function authed(method, path, body) {
  let response = await call(method, path, body);
  if (response.status === 401 && !(await needsStepUp(response))) {
    const refreshed = await call("POST", "/auth/refresh");
    if (!refreshed.ok) {
      return response;
    }
    response = await call(method, path, body);
  }
  if (await needsStepUp(response)) {
    if (!(await stepUp())) {
      throw new Declined();
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

// "2 minutes ago", for a time in the past.
const relative = new Intl.RelativeTimeFormat("en", { numeric: "auto" });
function ago(date) {
  const seconds = Math.round((date.getTime() - Date.now()) / 1000);
  const steps = [
    [60, "second"],
    [60, "minute"],
    [24, "hour"],
    [7, "day"],
    [4.35, "week"],
    [12, "month"],
    [Infinity, "year"],
  ];
  let value = seconds;
  for (const [size, unit] of steps) {
    if (Math.abs(value) < size) {
      if (unit === "second" && Math.abs(value) < 45) {
        return "just now";
      }
      return relative.format(Math.round(value), unit);
    }
    value /= size;
  }
  return date.toLocaleString();
}

// A <time> saying how long ago, with the exact time on hover and for assistive tech.
function timeElement(text) {
  const date = new Date(text);
  const time = document.createElement("time");
  if (Number.isNaN(date.getTime())) {
    time.textContent = text;
    return time;
  }
  time.dateTime = date.toISOString();
  time.title = date.toLocaleString();
  time.textContent = ago(date);
  return time;
}

function detail(list, term, value) {
  const dt = document.createElement("dt");
  dt.textContent = term;
  const dd = document.createElement("dd");
  dd.append(value);
  list.append(dt, dd);
}

// The name a person gave the device, else what its browser says it is.
function deviceTitle(session) {
  return session.device_name || session.device_label || "Unknown device";
}

function sessionItem(session) {
  const title = deviceTitle(session);
  const item = document.createElement("li");
  item.className = "session";
  item.dataset.sessionId = session.id;
  item.dataset.current = String(session.current);

  const heading = document.createElement("h3");
  heading.className = "device";
  heading.textContent = title;
  if (session.current) {
    const mark = document.createElement("span");
    mark.className = "this-device";
    mark.textContent = "This device";
    heading.append(" ", mark);
  }
  item.append(heading);
  if (session.device_name && session.device_label) {
    const label = document.createElement("p");
    label.className = "device-label";
    label.textContent = session.device_label;
    item.append(label);
  }

  const list = document.createElement("dl");
  detail(list, "Last used", timeElement(session.last_used_at));
  detail(list, "Signed in", timeElement(session.created_at));
  detail(list, "IP address", session.ip || "unknown");
  item.append(list);

  if (!session.current) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "sign-out-session secondary";
    button.textContent = "Sign out";
    button.setAttribute("aria-label", `Sign out ${title}`);
    button.addEventListener("click", () => signOutDevice(session.id, title));
    item.append(button);
  }
  return item;
}

// Signed out, with why when it was not this page's doing.
function showSignedOut(reason) {
  // A check that finds the page signed out already leaves the form the user is in.
  if (document.body.dataset.state !== "signed-out") {
    $("forgot").hidden = true;
    $("sign-in").hidden = false;
  }
  setState("signed-out");
  if (reason) {
    say(reason);
  }
}

// The reason a request found this browser signed out.
function endedElsewhere() {
  return shownSignedIn
    ? "This device was signed out from another device, or its session ended. Sign in again."
    : "";
}

// Shows the signed-in view with the live sessions, or the sign-in form, or that the
// server does not answer.
async function show() {
  try {
    const me = await authed("GET", "/me");
    if (me.status === 401) {
      showSignedOut(endedElsewhere());
      return false;
    }
    if (!me.ok) {
      fail(await problem(me));
      return false;
    }
    const sessions = await authed("GET", "/sessions");
    if (sessions.status === 401) {
      showSignedOut(endedElsewhere());
      return false;
    }
    if (!sessions.ok) {
      fail(await problem(sessions));
      return false;
    }
    const profile = await me.json();
    const list = (await sessions.json()).sessions;
    // This device first, then by last use.
    list.sort((a, b) => Number(b.current) - Number(a.current));
    others = list.filter((s) => !s.current).length;
    $("who").textContent = profile.email;
    showEmailState(profile);
    $("sessions").replaceChildren(...list.map(sessionItem));
    $("sign-out-others").hidden = others === 0;
    $("confirm-others").hidden = true;
    setState("signed-in");
    return true;
  } catch (error) {
    offline(error);
    return false;
  }
}

function showEmailState(profile) {
  const verified = profile.email_verified === true;
  $("email-state").dataset.verified = String(verified);
  $("email-state-text").textContent = verified
    ? "Your email address is confirmed."
    : "Your email address is not confirmed yet: open the link we mailed you.";
  $("resend").hidden = verified;
}

function offline(error) {
  if (!(error instanceof Offline)) {
    throw error;
  }
  setState("offline");
  fail("The server did not answer. Check your connection, then try again.");
}

// Runs `action`; a server that does not answer is shown with a retry.
async function guarded(action) {
  try {
    await action();
  } catch (error) {
    if (error instanceof Declined) {
      say("Nothing was changed: that needs you to confirm it is you.");
      return;
    }
    offline(error);
  }
}

async function signIn(event) {
  event.preventDefault();
  say("");
  const button = $("sign-in-button");
  button.disabled = true;
  await guarded(async () => {
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
    // A second factor is needed (factors.js): no session yet.
    if (typeof secondFactorNeeded === "function" && (await secondFactorNeeded(response))) {
      $("password").value = "";
      return;
    }
    if (!response.ok) {
      fail(await problem(response));
      return;
    }
    $("password").value = "";
    if (await show()) {
      say("You are signed in.");
      focus("signed-in-heading");
    }
  });
  button.disabled = false;
}

async function signOut() {
  await guarded(async () => {
    const response = await authed("POST", "/auth/logout");
    if (!response.ok && response.status !== 401) {
      fail(await problem(response));
      return;
    }
    showSignedOut("You signed out on this device.");
    focus("sign-in-heading");
  });
}

async function signOutDevice(id, title) {
  await guarded(async () => {
    const response = await authed("DELETE", `/sessions/${encodeURIComponent(id)}`);
    if (response.status === 401) {
      showSignedOut(endedElsewhere());
      focus("sign-in-heading");
      return;
    }
    const done = response.ok
      ? `Signed out ${title}.`
      : response.status === 404
        ? `${title} was signed out already.`
        : null;
    if (done === null) {
      fail(await problem(response));
      return;
    }
    if (await show()) {
      say(done);
      focus("devices-heading");
    }
  });
}

function askSignOutOthers() {
  $("confirm-others-text").textContent =
    others === 1
      ? "Sign out the other device? It will need the password to sign in again."
      : `Sign out all ${others} other devices? They will need the password to sign in again.`;
  $("confirm-others").hidden = false;
  focus("confirm-others-no");
}

async function signOutOthers() {
  await guarded(async () => {
    const response = await authed("POST", "/sessions/revoke-others");
    if (response.status === 401) {
      showSignedOut(endedElsewhere());
      focus("sign-in-heading");
      return;
    }
    if (!response.ok) {
      fail(await problem(response));
      return;
    }
    const { revoked } = await response.json();
    if (await show()) {
      say(revoked === 1 ? "Signed out 1 other device." : `Signed out ${revoked} other devices.`);
      focus("devices-heading");
    }
  });
}

async function resendVerification() {
  await guarded(async () => {
    const response = await authed("POST", "/auth/verify-email/resend");
    if (response.status === 202) {
      say(`A new link is on its way to ${$("who").textContent}.`);
    } else if (response.status === 204) {
      await show();
      say("Your email address is confirmed already.");
    } else if (response.status === 401) {
      showSignedOut(endedElsewhere());
      focus("sign-in-heading");
    } else {
      fail(await problem(response));
    }
  });
}

async function changePassword(event) {
  event.preventDefault();
  const button = $("change-password-button");
  button.disabled = true;
  await guarded(async () => {
    const response = await authed("POST", "/auth/password", {
      current_password: $("current-password").value,
      new_password: $("new-password").value,
    });
    if (response.status === 204) {
      $("current-password").value = "";
      $("new-password").value = "";
      showSignedOut(
        "Your password is changed and every device was signed out. Sign in with the new password.",
      );
      focus("sign-in-heading");
      return;
    }
    fail(await problem(response));
  });
  button.disabled = false;
}

function showForgot() {
  $("sign-in").hidden = true;
  $("forgot").hidden = false;
  const typed = $("email").value;
  if (typed && !$("forgot-email").value) {
    $("forgot-email").value = typed;
  }
  focus("forgot-heading");
}

function showSignIn() {
  $("forgot").hidden = true;
  $("sign-in").hidden = false;
  focus("sign-in-heading");
}

async function requestReset(event) {
  event.preventDefault();
  const button = $("forgot-button");
  button.disabled = true;
  await guarded(async () => {
    const response = await call("POST", "/auth/password-reset", { email: $("forgot-email").value });
    if (response.status === 202) {
      say(
        `If an account has the address ${$("forgot-email").value}, a link to set a new password is on its way.`,
      );
      showSignIn();
      return;
    }
    fail(await problem(response));
  });
  button.disabled = false;
}

// The page's address can say why the user came: a sign-in alert links to #new-sign-in,
// "Forgot password?" is #forgot.
function followFragment() {
  const fragment = window.location.hash.slice(1);
  if (fragment === "new-sign-in") {
    const notice = $("notice");
    notice.textContent =
      "Got a mail about a new sign-in that was not you? Sign in, sign that device out and " +
      "change your password. Cannot sign in any more? Use “Forgot password?”.";
    notice.hidden = false;
  } else if (fragment === "forgot" && document.body.dataset.state === "signed-out") {
    showForgot();
  }
}

$("sign-in").addEventListener("submit", signIn);
$("forgot").addEventListener("submit", requestReset);
$("forgot-link").addEventListener("click", (event) => {
  event.preventDefault();
  showForgot();
});
$("back-to-sign-in").addEventListener("click", (event) => {
  event.preventDefault();
  showSignIn();
});
$("sign-out").addEventListener("click", signOut);
$("sign-out-others").addEventListener("click", askSignOutOthers);
$("confirm-others-yes").addEventListener("click", signOutOthers);
$("confirm-others-no").addEventListener("click", () => {
  $("confirm-others").hidden = true;
  say("Nothing was signed out.");
  focus("sign-out-others");
});
$("resend").addEventListener("click", resendVerification);
$("change-password").addEventListener("submit", changePassword);
$("retry").addEventListener("click", async () => {
  say("");
  if (await show()) {
    focus("signed-in-heading");
  } else if (document.body.dataset.state === "signed-out") {
    focus("sign-in-heading");
  }
});

// Back and Forward may bring the page from the browser's memory: check again.
window.addEventListener("pageshow", (event) => {
  if (event.persisted) {
    show();
  }
});
// A tab that comes back into view may show a session that ended meanwhile.
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible" && document.body.dataset.state !== "loading") {
    show();
  }
});
window.addEventListener("hashchange", followFragment);

show().then(followFragment);
