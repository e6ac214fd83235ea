"""E-commerce session management: the tutorial's "Example 1", on Redis and MongoDB.

What it shows, with the tutorial's config (``ECOMMERCE_CONFIG``) built by ``pm.from_config``:

- **sessions** in Redis with a sliding 30-minute TTL (``refresh: true``): every read
  pushes the expiry, and logging out invalidates them by the user's tag;
- **carts** kept 24 hours and persisted: the tutorial's ``persist: true`` is a write-behind hybrid,
  Redis first and MongoDB as the durable store (``persist(cart)`` flushes the journal), so
  a cart survives Redis losing it;
- **products**: a hybrid cache (Redis, MongoDB) of the catalog with a 5-minute TTL and
  tags; a price change invalidates the product's tag and the next view reloads it;
- **orders** in MongoDB. The tutorial's ``indexes: [userId, status, createdAt]`` become
  tags (``userId:7``, ``status:paid``: the backend's ``(ns, tags)`` index answers them) and
  to the entry's own ``created_at`` (values are stored as opaque msgpack, so MongoDB cannot
  index fields inside them).

Run it against your servers (or set ``PREFECT_MEMORY_REDIS_URL`` /
``PREFECT_MEMORY_MONGODB_URL``)::

    python examples/ecommerce_sessions.py --redis redis://localhost:6379/0 \\
        --mongodb mongodb://localhost:27017/shop

``main(...)`` returns a summary dict; ``tests/examples/test_ecommerce_sessions.py`` runs it
against real servers.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
import uuid
from pathlib import Path
from typing import Any

import prefect_memory as pm

#: The tutorial's ``ecommerceMemory`` as JSON, with its three keys no store applies said
#: the way ``pm.from_config`` takes them (it refuses ``persist``, ``cache`` and ``indexes``
#: with what to write instead): ``carts`` is a hybrid with a durable MongoDB copy (what
#: ``persist: true`` means), ``products`` keeps the 5-minute ``cache.ttl`` as its ``ttl``,
#: and ``orders`` is found by tags instead of ``indexes``.
ECOMMERCE_CONFIG: dict[str, Any] = {
    "memory": {
        "backend": "hybrid",
        "namespaces": {
            "sessions": {"backend": "redis", "ttl": 1800, "refresh": True},
            "carts": {
                "backend": "hybrid", "primary": "redis", "secondary": "mongodb",
                "ttl": 86400,
                "sync": {"enabled": True, "interval": 1000, "strategy": "write-behind"},
            },
            "products": {
                "backend": "hybrid", "primary": "redis", "secondary": "mongodb",
                "ttl": 300,
            },
            "orders": {"backend": "mongodb"},
        },
    }
}  # fmt: skip

#: The catalog: the source of truth the product cache is filled from.
CATALOG: dict[str, dict[str, Any]] = {
    f"p{i}": {"id": f"p{i}", "name": f"Product {i}", "category": ("books", "games", "tools")[i % 3],
              "price": round(5 + 2.5 * i, 2)}
    for i in range(1, 21)
}  # fmt: skip


def _with_collection(url: str, collection: str) -> str:
    if "collection=" in url:
        return url
    return url + ("&" if "?" in url else "?") + f"collection={collection}"


class Shop:
    """The tutorial's workflow functions over the four namespaces.

    Args:
        spaces: ``pm.from_config(ECOMMERCE_CONFIG, connections=...)``.
        catalog: The product catalog (source of truth).
    """

    def __init__(self, spaces: pm.Namespaces, catalog: dict[str, dict[str, Any]]) -> None:
        self.sessions = spaces["sessions"]
        self.carts = spaces["carts"]
        self.products = spaces["products"]
        self.orders = spaces["orders"]
        self.product_ttl = spaces["products"].ttl
        self.catalog = catalog
        self.catalog_loads = 0
        self.cache_hits = 0

    def login(self, user: str) -> str:
        """Open a session (30 minutes, sliding); return its key."""
        key = f"session:{uuid.uuid4().hex[:12]}"
        self.sessions.set(key, {"user": user, "started": time.time()}, tags=[f"user:{user}"])
        return key

    def view_product(self, product_id: str) -> dict[str, Any]:
        """The product through the cache (filled from the catalog on a miss)."""
        key = f"product:{product_id}"
        cached = self.products.get(key)
        if cached is not None:
            self.cache_hits += 1
            return cached
        product = dict(self.catalog[product_id])
        self.catalog_loads += 1
        self.products.set(key, product, ttl=self.product_ttl,
                          tags=[key, f"category:{product['category']}"])  # fmt: skip
        return product

    def change_price(self, product_id: str, price: float) -> int:
        """Change a price in the catalog and invalidate the cached product (by tag)."""
        self.catalog[product_id]["price"] = price
        return self.products.invalidate_tags(f"product:{product_id}")

    def add_to_cart(self, user: str, product_id: str, quantity: int) -> dict[str, Any]:
        """The tutorial's ``addToCart``: read (or start) the cart, add the item, keep 24 h."""
        key = f"cart:{user}"
        cart = self.carts.get(key) or {"items": []}
        price = self.view_product(product_id)["price"]
        cart["items"].append({"productId": product_id, "quantity": quantity, "price": price,
                              "addedAt": time.time()})  # fmt: skip
        self.carts.set(key, cart, ttl=86400, tags=[f"user:{user}", "cart"])
        return cart

    def persist(self) -> int:
        """The tutorial's ``memory.persist``: write the journal to MongoDB now."""
        return self.carts.flush()  # type: ignore[attr-defined]

    def checkout(self, user: str) -> str:
        """Turn the cart into a pending order in MongoDB; drop the cart."""
        cart = self.carts.get(f"cart:{user}")
        if not cart:
            raise ValueError(f"user {user} has an empty cart")
        order_id = f"order:{uuid.uuid4().hex[:10]}"
        total = round(sum(i["price"] * i["quantity"] for i in cart["items"]), 2)
        order = {"userId": user, "status": "pending", "items": cart["items"], "total": total}
        self.orders.set(order_id, order, tags=[f"userId:{user}", "status:pending"])
        self.carts.delete(f"cart:{user}")
        return order_id

    def set_status(self, order_id: str, status: str) -> None:
        """Change an order's status (its ``created_at`` stays, its version goes up)."""
        order = self.orders.get(order_id)
        order["status"] = status
        self.orders.set(order_id, order, tags=[f"userId:{order['userId']}", f"status:{status}"])

    def orders_of(self, user: str) -> list[str]:
        """A user's orders, oldest first (the ``userId`` tag, then ``created_at``)."""
        keys = self.orders.tagged(f"userId:{user}")
        return sorted(keys, key=lambda k: self.orders.info(k).created_at)  # type: ignore[union-attr]


def main(
    redis_url: str | None = None,
    mongo_url: str | None = None,
    *,
    workdir: str | Path | None = None,
    users: int = 3,
    views: int = 60,
    verbose: bool = True,
) -> dict[str, Any]:
    """Run the e-commerce scenario and return what happened.

    Args:
        redis_url: Redis URL (default ``$PREFECT_MEMORY_REDIS_URL`` or localhost).
        mongo_url: MongoDB URL (default ``$PREFECT_MEMORY_MONGODB_URL`` or localhost);
            ``collection=shop`` is added when the URL names none.
        workdir: Folder of the carts' write-behind journal (default
            ``.prefect-memory/examples``).
        users: Shoppers.
        views: Product views (spread over the catalog, so the cache gets hits).
        verbose: Print each step.

    Returns:
        Counts and checks of each part: sessions, products, carts, orders.
    """
    redis_url = redis_url or os.environ.get("PREFECT_MEMORY_REDIS_URL", "redis://localhost:6379/0")
    mongo_url = mongo_url or os.environ.get("PREFECT_MEMORY_MONGODB_URL",
                                            "mongodb://localhost:27017/prefect_memory")  # fmt: skip
    say = print if verbose else (lambda *_a: None)
    config = copy.deepcopy(ECOMMERCE_CONFIG)
    journal = Path(workdir or ".prefect-memory/examples") / "carts-journal.db"
    config["memory"]["namespaces"]["carts"]["journal"] = str(journal)
    spaces = pm.from_config(config, connections={
        "redis": redis_url, "mongodb": _with_collection(mongo_url, "shop"),
    })  # fmt: skip
    assert isinstance(spaces, pm.Namespaces)
    shop = Shop(spaces, copy.deepcopy(CATALOG))
    summary: dict[str, Any] = {}
    try:
        # Sessions: sliding expiry, invalidated by tag on logout.
        names = [f"user{n}" for n in range(1, users + 1)]
        sessions = {user: shop.login(user) for user in names}
        first = next(iter(sessions.values()))
        before = shop.sessions.info(first).expires_at  # type: ignore[union-attr]
        time.sleep(0.05)
        shop.sessions.get(first)
        after = shop.sessions.info(first).expires_at  # type: ignore[union-attr]
        say(f"sessions: {len(sessions)} open, expiry pushed by a read: {before} -> {after}")
        summary["sessions"] = {
            "open": len(sessions), "sliding": bool(after > before),
            "ttl_seconds": shop.sessions.info(first).ttl,  # type: ignore[union-attr]
        }  # fmt: skip

        # Products: a tagged cache of the catalog; a price change invalidates one product.
        ids = list(shop.catalog)
        for n in range(views):
            shop.view_product(ids[(n * 7) % len(ids) if n % 2 else n % 5])
        old_price = shop.view_product("p3")["price"]
        invalidated = shop.change_price("p3", old_price + 10)
        new_price = shop.view_product("p3")["price"]
        say(f"products: {shop.cache_hits} cache hits, {shop.catalog_loads} catalog loads; "
            f"p3 {old_price} -> {new_price} after invalidating {invalidated} entry")  # fmt: skip
        summary["products"] = {
            "views": shop.cache_hits + shop.catalog_loads,
            "cache_hits": shop.cache_hits, "catalog_loads": shop.catalog_loads,
            "invalidated": invalidated, "price_before": old_price, "price_after": new_price,
            "ttl_seconds": shop.products.info("product:p3").ttl,  # type: ignore[union-attr]
        }  # fmt: skip

        # Carts: 24 hours, persisted to MongoDB; Redis losing one is not losing it.
        for i, user in enumerate(names):
            for j in range(i + 1):
                shop.add_to_cart(user, ids[(i + j) % len(ids)], quantity=j + 1)
        flushed = shop.persist()
        durable = pm.Memory(shop.carts.secondary, "carts")  # type: ignore[attr-defined]
        in_mongodb = sorted(durable.keys("cart:*"))
        lost, redis = f"cart:{names[-1]}", shop.carts.primary  # type: ignore[attr-defined]
        redis.delete_many("carts", [lost], now=time.time())  # as if Redis had lost it
        recovered = shop.carts.get(lost)  # read through MongoDB, put back in Redis
        back_in_redis = bool(redis.exists_many("carts", [lost], now=time.time()))
        say(
            f"carts: {len(in_mongodb)} persisted to MongoDB ({flushed} journal entries); "
            f"{lost} dropped from Redis and read back: {recovered is not None}"
        )
        summary["carts"] = {
            "carts": len(names), "in_mongodb": len(in_mongodb), "journal_applied": flushed,
            "recovered_after_redis_loss": recovered is not None,
            "back_in_redis": back_in_redis,
            "ttl_seconds": shop.carts.info(f"cart:{names[0]}").ttl,  # type: ignore[union-attr]
        }  # fmt: skip

        # Orders: checkout, pay, query by user and by status.
        placed = [shop.checkout(user) for user in names]
        for order_id in placed[:-1]:
            shop.set_status(order_id, "paid")
        shop.add_to_cart(names[0], "p1", quantity=1)
        placed.append(shop.checkout(names[0]))
        history = shop.orders_of(names[0])
        paid = shop.orders.tagged("status:paid")
        say(f"orders: {len(placed)} placed, {len(paid)} paid; {names[0]} has {len(history)}")
        summary["orders"] = {
            "placed": len(placed), "paid": len(paid),
            "pending": len(shop.orders.tagged("status:pending")),
            "of_first_user": len(history),
            "oldest_first": history == [placed[0], placed[-1]],
            "carts_left": sorted(shop.carts.keys("cart:*")),
        }  # fmt: skip

        # Logout: one tag removes every session of the user.
        summary["sessions"]["logged_out"] = shop.sessions.invalidate_tags(f"user:{names[0]}")
        say(f"logout: {summary['sessions']['logged_out']} session(s) of {names[0]} removed")
    finally:
        for memory in spaces.values():
            memory.close()
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", help="Redis URL (default $PREFECT_MEMORY_REDIS_URL)")
    parser.add_argument("--mongodb", help="MongoDB URL (default $PREFECT_MEMORY_MONGODB_URL)")
    args = parser.parse_args()
    main(args.redis, args.mongodb)
