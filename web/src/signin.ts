// Sign-in: a "sign in as" form with development tokens, a redirect to the
// OpenID provider otherwise.

import type { App } from "./app";
import { h, show } from "./dom";

export function signInView(app: App, root: HTMLElement): void {
  const alert = h("p", { role: "alert", class: "problem" }, app.notice);
  app.notice = "";
  if (app.tokens.kind === "oidc") {
    show(
      root,
      h("h1", {}, "Sign in"),
      alert,
      h("button", { type: "button", onclick: () => void app.tokens.signIn("") }, "Sign in"),
    );
    return;
  }
  const user = h("input", { id: "user", name: "user", required: true, autocomplete: "username", maxlength: 64 });
  const submit = h("button", { type: "submit" }, "Sign in");
  const form = h(
    "form",
    {
      onsubmit: async (event: Event) => {
        event.preventDefault();
        submit.setAttribute("disabled", "");
        try {
          const session = await app.tokens.signIn((user as HTMLInputElement).value.trim());
          app.signedIn(session);
          location.hash = "#/";
        } catch (error) {
          alert.textContent = app.problem(error);
        } finally {
          submit.removeAttribute("disabled");
        }
      },
    },
    h("label", { for: "user" }, "User name"),
    user,
    submit,
  );
  show(root, h("h1", {}, "Sign in"), h("p", {}, "Development sign-in: any user name will do."), alert, form);
  user.focus();
}
