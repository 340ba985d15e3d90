// The pages that links in account mail open: /account/verify and /account/reset. The
// token comes from the link's query; it is taken out of the address bar at once (so it
// is not kept in history or shown over a shoulder) and posted only when the user presses
// the button: opening the link alone, as mail scanners do, uses nothing up. A link that
// is used, replaced or expired says how to get a new one.
"use strict";

const $ = (id) => document.getElementById(id);

const page = document.body.dataset.page;
const token = new URLSearchParams(window.location.search).get("token") || "";
window.history.replaceState(null, "", window.location.pathname);

// ready (the button), done, failed (the link is no good: a way to get a new one).
function setState(state) {
  document.body.dataset.state = state;
  $("link-form").hidden = state !== "ready";
  $("new-link").hidden = state !== "failed";
}

function say(text) {
  $("error").textContent = "";
  $("status").textContent = text || "";
}

// What went wrong, in the alert region, focused so that it is read at once.
function fail(text) {
  $("status").textContent = "";
  const error = $("error");
  error.textContent = text;
  error.tabIndex = -1;
  error.focus();
}

// The error body of a refused request: its code and its sentence.
async function problem(response) {
  try {
    const body = await response.json();
    return { code: body.error || "", message: body.message || body.error || `error ${response.status}` };
  } catch {
    return { code: "", message: `error ${response.status}` };
  }
}

function post(path, body) {
  return fetch(path, {
    method: "POST",
    credentials: "omit",
    cache: "no-store",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

const actions = {
  verify: {
    request: () => post("/auth/verify-email", { token }),
    done: "Your address is confirmed. Thank you.",
  },
  reset: {
    request: () =>
      post("/auth/password-reset/confirm", { token, new_password: $("new-password").value }),
    done: "Your password is set. Every device was signed out: sign in with the new password.",
  },
};

const action = actions[page];

$("link-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("link-button").disabled = true;
  say("");
  try {
    const response = await action.request();
    if (response.ok) {
      setState("done");
      say(action.done);
      return;
    }
    const { code, message } = await problem(response);
    // A used, replaced or expired link stays so; a weak password can be typed again.
    if (code === "invalid_verification_token" || code === "invalid_reset_token") {
      setState("failed");
    }
    fail(message);
  } catch (error) {
    fail(`The server did not answer: ${error.message}. Try again.`);
  } finally {
    $("link-button").disabled = false;
  }
});

// On the reset page, a link that is no good can be replaced from here.
const newLink = $("new-link");
if (newLink instanceof HTMLFormElement) {
  newLink.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = $("new-link-button");
    button.disabled = true;
    try {
      const email = $("new-link-email").value;
      const response = await post("/auth/password-reset", { email });
      if (response.status === 202) {
        say(`If an account has the address ${email}, a new link is on its way.`);
      } else {
        fail((await problem(response)).message);
      }
    } catch (error) {
      fail(`The server did not answer: ${error.message}. Try again.`);
    } finally {
      button.disabled = false;
    }
  });
}

if (token === "") {
  setState("failed");
  fail("This link has no token. Open the link from the mail again.");
} else {
  setState("ready");
}
