// The catalog: search, a category filter and pages; "Add to cart" on each
// product.

import type { App } from "./app";
import { h, Latest, show } from "./dom";
import type { Product } from "./gen/shop/catalog/v1/catalog_pb";
import { money } from "./money";

const PAGE_SIZE = 12;

export async function catalogView(app: App, root: HTMLElement): Promise<void> {
  const state = { query: "", category: "", tokens: [""] as string[] };
  const search = h("input", { id: "search", type: "search", name: "query", maxlength: 100 }) as HTMLInputElement;
  const category = h("select", { id: "category", name: "category" }, h("option", { value: "" }, "All categories"));
  const list = h("ul", { class: "products", "aria-label": "Products" });
  const pager = h("nav", { "aria-label": "Pages", class: "pager" });
  const live = h("p", { "aria-live": "polite", class: "notice" });
  // Before the first await: a search submitted while the categories load
  // calls load(), which takes the next listing from it.
  const listings = new Latest();

  const form = h(
    "form",
    {
      role: "search",
      onsubmit: (event: Event) => {
        event.preventDefault();
        state.query = search.value;
        state.category = (category as HTMLSelectElement).value;
        state.tokens = [""];
        void load();
      },
    },
    h("label", { for: "search" }, "Search"),
    search,
    h("label", { for: "category" }, "Category"),
    category,
    h("button", { type: "submit" }, "Find"),
  );
  category.addEventListener("change", () => (form as HTMLFormElement).requestSubmit());
  show(root, h("h1", {}, "Catalog"), form, live, list, pager);

  try {
    const { categories } = await app.catalog.listCategories({});
    for (const c of categories) {
      category.append(h("option", { value: c.name }, `${title(c.name)} (${c.productCount})`));
    }
  } catch (error) {
    live.textContent = app.problem(error);
  }

  async function load(): Promise<void> {
    const signal = listings.next();
    list.setAttribute("aria-busy", "true");
    try {
      const page = await app.catalog.listProducts(
        {
          pageSize: PAGE_SIZE,
          pageToken: state.tokens[state.tokens.length - 1],
          category: state.category,
          query: state.query,
        },
        { signal },
      );
      if (signal.aborted) return;
      show(list, ...page.products.map((p) => productCard(p)));
      if (page.products.length === 0) show(list, h("li", {}, "No products match."));
      const previous =
        state.tokens.length > 1 &&
        h("button", { type: "button", onclick: () => (state.tokens.pop(), void load()) }, "Previous page");
      const next =
        page.nextPageToken &&
        h("button", { type: "button", onclick: () => (state.tokens.push(page.nextPageToken), void load()) }, "Next page");
      show(pager, previous, next);
    } catch (error) {
      if (!signal.aborted) live.textContent = app.problem(error);
    } finally {
      if (!signal.aborted) list.removeAttribute("aria-busy");
    }
  }

  function productCard(product: Product): HTMLElement {
    const add = h("button", { type: "button" }, "Add to cart");
    add.addEventListener("click", async () => {
      if (!app.session) {
        app.notice = "Sign in to fill a cart.";
        location.hash = "#/sign-in";
        return;
      }
      add.setAttribute("disabled", "");
      try {
        const cart = await app.carts.addItem({ sku: product.sku, quantity: 1 });
        const line = cart.lines.find((l) => l.sku === product.sku);
        live.textContent = `Added ${product.name} to your cart (${line?.quantity ?? 1} in it).`;
      } catch (error) {
        live.textContent = app.problem(error);
      } finally {
        add.removeAttribute("disabled");
      }
    });
    return h(
      "li",
      {},
      h(
        "article",
        { "aria-labelledby": `product-${product.sku}` },
        h("h2", { id: `product-${product.sku}` }, product.name),
        h("p", { class: "price" }, money(product.price)),
        h("p", {}, product.description),
        h("p", { class: "meta" }, `${title(product.category)} · ${product.sku}`),
        add,
      ),
    );
  }

  await load();
}

function title(name: string): string {
  return name.charAt(0).toUpperCase() + name.slice(1);
}
