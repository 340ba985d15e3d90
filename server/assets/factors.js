// Second factors on the account page: set up an authenticator app (QR code, first code,
// recovery codes shown once), add a passkey, list and remove factors, finish a sign-in
// with a code or a passkey, sign in with a passkey alone, and the step-up prompt that a
// privileged action asks for (401 `insufficient_user_authentication`, RFC 9470).
//
// It runs after account.js and uses its helpers ($, call, authed, problem, say, setState,
// show). Like it, it writes every value with textContent; the QR code is the server's own
// SVG, parsed as SVG (never as HTML) and adopted into the page.
"use strict";

const factorState = { mfaToken: null, stepUp: null };

// Shows the parts of this page that belong to the state account.js set.
function factorsFollowState() {
  const state = document.body.dataset.state;
  $("second-factor").hidden = state !== "second-factor";
  $("passkey-entry").hidden = state !== "signed-out" || !window.PublicKeyCredential;
  if (state === "signed-in") {
    loadFactors().catch((error) => say(String(error)));
  }
}

// The JSON of a response, or an empty object.
async function jsonOf(response) {
  try {
    return await response.json();
  } catch {
    return {};
  }
}

// Whether a refusal asks for a step-up (RFC 9470).
async function needsStepUp(response) {
  if (response.status !== 401) {
    return false;
  }
  const challenge = response.headers.get("WWW-Authenticate") || "";
  return challenge.includes("insufficient_user_authentication");
}

// A privileged request (see `authed`): its response when it succeeded; null when it
// did not (the page says why) or the user closed the step-up prompt.
async function privileged(method, path, body) {
  let response;
  try {
    response = await authed(method, path, body);
  } catch (error) {
    if (error instanceof Declined) {
      return null;
    }
    throw error;
  }
  if (!response.ok) {
    say(await problem(response));
    return null;
  }
  return response;
}

// ----- The list of factors -----

function factorItem(factor) {
  const item = document.createElement("li");
  item.className = "factor";
  item.dataset.factorId = factor.id;
  item.dataset.kind = factor.kind;
  const name = document.createElement("div");
  name.className = "device";
  name.textContent = factor.kind === "passkey" ? `Passkey: ${factor.name}` : factor.name;
  item.append(name);
  const list = document.createElement("dl");
  detail(list, "Added", when(factor.created_at));
  detail(list, "Last used", factor.last_used_at ? when(factor.last_used_at) : "never");
  item.append(list);
  const button = document.createElement("button");
  button.type = "button";
  button.className = "remove-factor secondary";
  button.textContent = "Remove";
  button.setAttribute("aria-label", `Remove ${name.textContent}`);
  button.addEventListener("click", () => removeFactor(factor.id));
  item.append(button);
  return item;
}

async function loadFactors() {
  const response = await authed("GET", "/auth/mfa/factors");
  if (!response.ok) {
    say(await problem(response));
    return;
  }
  const { factors } = await response.json();
  $("factor-list").replaceChildren(...factors.map(factorItem));
  $("no-factors").hidden = factors.length > 0;
  $("new-recovery-codes").hidden = factors.length === 0;
  $("add-passkey").hidden = !window.PublicKeyCredential;
  $("factors").dataset.count = String(factors.length);
}

async function removeFactor(id) {
  say("");
  const response = await privileged("DELETE", `/auth/mfa/factors/${encodeURIComponent(id)}`);
  if (response) {
    say("The factor was removed.");
  }
  await show();
}

function showRecoveryCodes(codes) {
  if (!codes || codes.length === 0) {
    return;
  }
  $("recovery-code-list").replaceChildren(
    ...codes.map((code) => {
      const item = document.createElement("li");
      item.textContent = code;
      return item;
    }),
  );
  $("recovery-codes").hidden = false;
  $("recovery-done").focus();
}

// ----- An authenticator app -----

async function addTotp() {
  say("");
  const response = await privileged("POST", "/auth/mfa/totp");
  if (!response) {
    return;
  }
  const enrolment = await response.json();
  const svg = new DOMParser().parseFromString(enrolment.qr_svg, "image/svg+xml").documentElement;
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "QR code of the authenticator app setup");
  $("totp-qr").replaceChildren(document.importNode(svg, true));
  $("totp-secret").textContent = enrolment.secret;
  $("totp-setup").dataset.factorId = enrolment.factor_id;
  $("totp-setup").hidden = false;
  $("totp-code").value = "";
  $("totp-code").focus();
}

async function confirmTotp(event) {
  event.preventDefault();
  say("");
  const id = $("totp-setup").dataset.factorId;
  const response = await privileged("POST", `/auth/mfa/totp/${encodeURIComponent(id)}/confirm`, {
    code: $("totp-code").value.trim(),
  });
  if (!response) {
    return;
  }
  const { recovery_codes: codes } = await response.json();
  $("totp-setup").hidden = true;
  say("The authenticator app is set up.");
  await loadFactors();
  showRecoveryCodes(codes);
}

async function newRecoveryCodes() {
  say("");
  const response = await privileged("POST", "/auth/mfa/recovery-codes");
  if (!response) {
    return;
  }
  showRecoveryCodes((await response.json()).recovery_codes);
}

// ----- Passkeys -----

// The options without their `null` members, which the browser's JSON parsers refuse
// where WebAuthn's dictionaries mean "absent".
function withoutNulls(value) {
  if (Array.isArray(value)) {
    return value.map(withoutNulls);
  }
  if (value && typeof value === "object") {
    return Object.fromEntries(
      Object.entries(value)
        .filter(([, member]) => member !== null)
        .map(([key, member]) => [key, withoutNulls(member)]),
    );
  }
  return value;
}

// The credential a passkey ceremony's options ask the browser for, as JSON to post.
async function passkeyCreate(options) {
  const publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(withoutNulls(options.publicKey));
  const credential = await navigator.credentials.create({ publicKey });
  return credential.toJSON();
}

async function passkeyGet(options) {
  const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(withoutNulls(options.publicKey));
  const credential = await navigator.credentials.get({ publicKey });
  return credential.toJSON();
}

async function addPasskey() {
  say("");
  const begun = await privileged("POST", "/auth/passkeys/registration/options");
  if (!begun) {
    return;
  }
  const { challenge_id: challengeId, options } = await begun.json();
  let credential;
  try {
    credential = await passkeyCreate(options);
  } catch (error) {
    say(`No passkey was added: ${error.message || error}`);
    return;
  }
  const name = $("passkey-name").value.trim() || "Passkey";
  const response = await call("POST", "/auth/passkeys/registration", {
    challenge_id: challengeId,
    name,
    credential,
  });
  if (!response.ok) {
    say(await problem(response));
    return;
  }
  say("The passkey was added.");
  await loadFactors();
}

// Signs in with a passkey: alone, or finishing the password sign-in of `mfaToken`.
async function signInWithPasskey(mfaToken) {
  say("");
  const email = $("email").value.trim();
  const begun = await call("POST", "/auth/passkeys/authentication/options", email ? { email } : {});
  if (!begun.ok) {
    say(await problem(begun));
    return;
  }
  const { challenge_id: challengeId, options } = await begun.json();
  let credential;
  try {
    credential = await passkeyGet(options);
  } catch (error) {
    say(`Not signed in: ${error.message || error}`);
    return;
  }
  const body = { challenge_id: challengeId, credential, transport: "cookie" };
  if (mfaToken) {
    body.mfa_token = mfaToken;
  }
  const name = $("device-name").value.trim();
  if (name) {
    body.device_name = name;
  }
  const response = await call("POST", "/auth/passkeys/authentication", body);
  if (!response.ok) {
    say(await problem(response));
    return;
  }
  factorState.mfaToken = null;
  await show();
}

// ----- The second step of a password sign-in -----

// Called by account.js when a sign-in answered `mfa_required`: whether it was that.
async function secondFactorNeeded(response) {
  if (response.status !== 403) {
    return false;
  }
  const body = await jsonOf(response.clone());
  if (body.error !== "mfa_required") {
    return false;
  }
  factorState.mfaToken = body.mfa_token;
  const kinds = new Set((body.factors || []).map((factor) => factor.kind));
  const totp = (body.factors || []).find((factor) => factor.kind === "totp");
  $("mfa-code-form").hidden = !totp;
  $("mfa-code-form").dataset.factorId = totp ? totp.id : "";
  $("mfa-passkey").hidden = !kinds.has("passkey") || !window.PublicKeyCredential;
  setState("second-factor");
  say("Your password is right. Now prove it is you with your second factor.");
  (totp ? $("mfa-code") : $("mfa-recovery-code")).focus();
  return true;
}

async function verifySecondFactor(body) {
  say("");
  body.mfa_token = factorState.mfaToken;
  const response = await call("POST", "/auth/mfa/verify", body);
  if (!response.ok) {
    const problemText = await problem(response);
    if (response.status === 401) {
      factorState.mfaToken = null;
      setState("signed-out");
    }
    say(problemText);
    return;
  }
  factorState.mfaToken = null;
  $("mfa-code").value = "";
  $("mfa-recovery-code").value = "";
  await show();
}

// ----- Step-up -----

// Asks the user to prove who they are again; resolves whether they did.
function stepUp() {
  const dialog = $("step-up");
  $("step-up-password").value = "";
  $("step-up-code").value = "";
  $("step-up-error").textContent = "";
  dialog.showModal();
  $("step-up-password").focus();
  return new Promise((resolve) => {
    factorState.stepUp = resolve;
  });
}

function endStepUp(done) {
  $("step-up").close();
  const resolve = factorState.stepUp;
  factorState.stepUp = null;
  if (resolve) {
    resolve(done);
  }
}

async function sendStepUp(body) {
  const response = await call("POST", "/auth/step-up", body);
  if (!response.ok) {
    $("step-up-error").textContent = await problem(response);
    return;
  }
  endStepUp(true);
}

async function stepUpSubmit(event) {
  event.preventDefault();
  const code = $("step-up-code").value.trim();
  const password = $("step-up-password").value;
  if (code) {
    const factors = await authed("GET", "/auth/mfa/factors");
    const list = factors.ok ? (await factors.json()).factors : [];
    const totp = list.find((factor) => factor.kind === "totp");
    await sendStepUp(/^\d{6}$/.test(code) && totp ? { factor_id: totp.id, code } : { recovery_code: code });
  } else if (password) {
    await sendStepUp({ password });
  } else {
    $("step-up-error").textContent = "Enter your password or a code.";
  }
}

async function stepUpWithPasskey() {
  const begun = await call("POST", "/auth/passkeys/authentication/options", {});
  if (!begun.ok) {
    $("step-up-error").textContent = await problem(begun);
    return;
  }
  const { challenge_id: challengeId, options } = await begun.json();
  try {
    const credential = await passkeyGet(options);
    await sendStepUp({ challenge_id: challengeId, credential });
  } catch (error) {
    $("step-up-error").textContent = String(error.message || error);
  }
}

// ----- Wiring -----

new MutationObserver(factorsFollowState).observe(document.body, {
  attributes: true,
  attributeFilter: ["data-state"],
});
$("add-totp").addEventListener("click", () => addTotp().catch((e) => say(String(e))));
$("totp-setup").addEventListener("submit", (e) => confirmTotp(e).catch((x) => say(String(x))));
$("add-passkey").addEventListener("click", () => addPasskey().catch((e) => say(String(e))));
$("new-recovery-codes").addEventListener("click", () => newRecoveryCodes().catch((e) => say(String(e))));
$("recovery-done").addEventListener("click", () => {
  $("recovery-codes").hidden = true;
  $("recovery-code-list").replaceChildren();
});
$("mfa-code-form").addEventListener("submit", (event) => {
  event.preventDefault();
  verifySecondFactor({
    factor_id: $("mfa-code-form").dataset.factorId,
    code: $("mfa-code").value.trim(),
  }).catch((e) => say(String(e)));
});
$("mfa-recovery-form").addEventListener("submit", (event) => {
  event.preventDefault();
  verifySecondFactor({ recovery_code: $("mfa-recovery-code").value.trim() }).catch((e) => say(String(e)));
});
$("mfa-passkey").addEventListener("click", () =>
  signInWithPasskey(factorState.mfaToken).catch((e) => say(String(e))),
);
$("mfa-cancel").addEventListener("click", () => {
  factorState.mfaToken = null;
  setState("signed-out");
  say("");
});
$("passkey-sign-in").addEventListener("click", () => signInWithPasskey(null).catch((e) => say(String(e))));
$("step-up-form").addEventListener("submit", (e) => stepUpSubmit(e).catch((x) => say(String(x))));
$("step-up-passkey").addEventListener("click", () => stepUpWithPasskey().catch((e) => say(String(e))));
$("step-up-cancel").addEventListener("click", () => endStepUp(false));
$("step-up").addEventListener("cancel", () => endStepUp(false));
factorsFollowState();
