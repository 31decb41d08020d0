//! Carts and checkout records in Redis.
//!
//! Keys (the user id in braces is a Redis Cluster hash tag, so every key of
//! one user lives in one slot and the multi-key scripts below stay legal):
//!
//! - `cart:{user}`: hash. `c` → currency, and per line `q:<sku>` → units and
//!   `p:<sku>` → JSON snapshot of name and unit price at the last AddItem.
//!   An empty cart has no key at all. Every change sets the expiry again in
//!   the same script (sliding TTL); reads leave it alone, so `expires_at`
//!   means "unless it changes again", as the contract says.
//! - `checkout-key:{user}:<idempotency key>`: hash `l:<sku>` → units: the
//!   lines first sent under that key. A retry (double click, timeout)
//!   re-sends exactly these, so svc-order recognises the same request even
//!   after the cart has changed or been cleared.
//! - `checkout:{user}:<order id>`: hash `state` → `pending` | `done`, plus
//!   `l:<sku>` → units while pending: what the order took from the cart, so
//!   its confirmation removes exactly that. `done` stays as a tombstone until
//!   the record expires, so a redelivered confirmation or a late Checkout
//!   retry never removes the lines a second time.
//! - `checkout-inflight:{user}`: sorted set of idempotency keys whose
//!   PlaceOrder is under way, scored by a deadline. A confirmation that
//!   overtakes the write of its checkout record (the saga can be faster than
//!   the PlaceOrder reply) sees it and is retried instead of dropped. A key
//!   whose PlaceOrder went unanswered stays until its deadline, past which
//!   svc-order can no longer place an order under it.
//! - `checkout-held:{user}`: hash `l:<sku>` → units that orders still under
//!   way took; a checkout orders only what the cart holds beyond them.
//! - `checkout-unsure:{user}`: set of idempotency keys whose PlaceOrder went
//!   unanswered (a timeout, a lost connection): an order may exist under
//!   them that no record holds. A checkout under another key first learns
//!   each one's fate from svc-order ([`Begun::Unsure`]), so the same lines
//!   are never ordered twice.
//!
//! Every write is one Lua script or MULTI, so limits are checked and applied
//! in one step, and no key is ever left without an expiry.

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, Utc};
use redis::{
    Script,
    aio::{ConnectionManager, ConnectionManagerConfig},
};
use serde::{Deserialize, Serialize};
use shop_runtime::{
    api_error::ApiError,
    identity::UserId,
    values::{Currency, Money, Quantity, Sku},
};

use crate::error::{CARTS, corrupt};

/// Lines per cart and units per line.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_lines: u32,
    pub max_quantity: i32,
}

/// Expiries of the keys.
#[derive(Debug, Clone, Copy)]
pub struct Expiries {
    pub cart: Duration,
    pub checkout: Duration,
    /// How long a PlaceOrder may be under way (its deadline plus slack).
    pub in_flight: Duration,
}

/// What the cart keeps of a product: the name and price seen at the last
/// AddItem of it.
#[derive(Debug, Clone)]
pub struct Product {
    pub name: String,
    pub unit_price: Money,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub sku: String,
    pub name: String,
    pub quantity: i32,
    pub unit_price: Money,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cart {
    /// By SKU.
    pub lines: Vec<Line>,
    /// `None` for an empty cart (it has no key, hence no expiry).
    pub expires_at: Option<DateTime<Utc>>,
}

impl Cart {
    /// The sum of the lines, `None` when empty. Checked: an overflow is an
    /// error, never a wrapped total.
    pub fn total(&self) -> Result<Option<Money>, ApiError> {
        let mut total: Option<Money> = None;
        for line in &self.lines {
            let quantity = Quantity::new(line.quantity).map_err(|why| corrupt(format!("{}: {why}", line.sku)))?;
            let amount = line.unit_price.times(quantity);
            total = match (total, amount) {
                (None, Some(amount)) => Some(amount),
                (Some(sum), Some(amount)) => sum.plus(amount),
                (_, None) => None,
            };
            if total.is_none() {
                return Err(ApiError::FailedPrecondition(
                    "the cart total is too large to compute; remove some items".into(),
                ));
            }
        }
        Ok(total)
    }
}

/// A checked-out line: SKU and units.
pub type CheckoutLine = (String, i32);

/// What a checkout begins with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begun {
    /// The lines to order under the key.
    Lines(Vec<CheckoutLine>),
    /// An earlier checkout under this key went unanswered: its fate must be
    /// known (recorded with [`CartStore::record_checkout`], or
    /// [`CartStore::forget_unsure`]) before anything else is ordered.
    Unsure(String),
}

/// What is known of a PlaceOrder that did not answer with an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unanswered {
    /// svc-order refused it, or no replica took it: no order exists under
    /// the key, and a retry under it reads the cart afresh.
    NoOrder,
    /// It may have placed an order (a timeout, a lost connection): a retry
    /// under the key re-sends the same lines, and a checkout under another
    /// key first asks svc-order.
    MaybePlaced,
}

/// Where an order stands when its checkout is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderState {
    /// Under way: its lines are held until its end arrives.
    Open,
    /// Already ended (a retry or a lookup found it settled): no event will
    /// end it again, so the checkout ends at once.
    Ended(OrderEnd),
}

/// How an order that came from the cart ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderEnd {
    /// Its lines leave the cart.
    Confirmed,
    /// Its lines stay, free for another checkout.
    Cancelled,
}

impl OrderEnd {
    /// As the scripts spell it.
    fn as_str(self) -> &'static str {
        match self {
            OrderEnd::Confirmed => "confirmed",
            OrderEnd::Cancelled => "cancelled",
        }
    }
}

/// What the end of an order did to its checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Its lines were let go now (and, when confirmed, removed).
    Now,
    /// Done before (a redelivery or replay).
    Already,
    /// A checkout of this user is still waiting for svc-order's reply; the
    /// record may not be written yet.
    CheckoutInFlight,
    /// The order was not placed through the cart.
    NotFromCart,
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    name: String,
    unit_minor: i64,
}

const CART_REPLY: &str = "return {1, '', redis.call('PTTL', KEYS[1]), redis.call('HGETALL', KEYS[1])}";

/// KEYS: cart. ARGV: sku, units to add, snapshot, currency, max lines,
/// max units per line, TTL ms. Refusals: -1 too many lines (detail: lines
/// held), -2 too many units (detail: units held), -3 other currency
/// (detail: the cart's).
const ADD: &str = r"
local cart, sku = KEYS[1], ARGV[1]
local currency = redis.call('HGET', cart, 'c')
if currency and currency ~= ARGV[4] then
  return {-3, currency, 0, {}}
end
local current = tonumber(redis.call('HGET', cart, 'q:' .. sku) or '0')
if current == 0 then
  local fields = redis.call('HLEN', cart)
  if fields > 0 and (fields - 1) / 2 >= tonumber(ARGV[5]) then
    return {-1, tostring((fields - 1) / 2), 0, {}}
  end
end
if current + tonumber(ARGV[2]) > tonumber(ARGV[6]) then
  return {-2, tostring(current), 0, {}}
end
redis.call('HINCRBY', cart, 'q:' .. sku, ARGV[2])
redis.call('HSET', cart, 'p:' .. sku, ARGV[3], 'c', ARGV[4])
redis.call('PEXPIRE', cart, ARGV[7])
";

/// KEYS: cart. ARGV: sku, units, TTL ms. Refusal: -4 no such line.
const UPDATE: &str = r"
local cart, q = KEYS[1], 'q:' .. ARGV[1]
if redis.call('HEXISTS', cart, q) == 0 then
  return {-4, '', 0, {}}
end
redis.call('HSET', cart, q, ARGV[2])
redis.call('PEXPIRE', cart, ARGV[3])
";

/// KEYS: cart. ARGV: sku, TTL ms. Removing what is not there changes
/// nothing (and does not extend the cart's life).
const REMOVE: &str = r"
local cart, sku = KEYS[1], ARGV[1]
if redis.call('HDEL', cart, 'q:' .. sku, 'p:' .. sku) > 0 then
  if redis.call('HLEN', cart) <= 1 then
    redis.call('DEL', cart)
  else
    redis.call('PEXPIRE', cart, ARGV[2])
  end
end
";

/// KEYS: cart, key record, in-flight set, held hash, unsure set. ARGV:
/// idempotency key, record TTL ms, in-flight window ms. Returns `{'lines',
/// l:<sku>, units, ...}`: those recorded under the key, else what the cart
/// holds beyond the units orders still under way took (recorded now; none:
/// an empty cart); `{'held'}` when orders under way took all of it;
/// `{'busy', other key}` while a checkout under another key awaits
/// svc-order's reply (it may take the same lines); or `{'unsure', other
/// key}` when another key's PlaceOrder went unanswered.
const BEGIN_CHECKOUT: &str = r"
local lines = redis.call('HGETALL', KEYS[2])
if #lines == 0 then
  local now = redis.call('TIME')
  local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now_ms)
  for _, other in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
    if other ~= ARGV[1] then
      return {'busy', other}
    end
  end
  for _, other in ipairs(redis.call('SMEMBERS', KEYS[5])) do
    if other ~= ARGV[1] then
      return {'unsure', other}
    end
  end
  local cart = redis.call('HGETALL', KEYS[1])
  for i = 1, #cart, 2 do
    if string.sub(cart[i], 1, 2) == 'q:' then
      local sku = string.sub(cart[i], 3)
      local free = tonumber(cart[i + 1]) - tonumber(redis.call('HGET', KEYS[4], 'l:' .. sku) or '0')
      if free > 0 then
        table.insert(lines, 'l:' .. sku)
        table.insert(lines, tostring(free))
      end
    end
  end
  if #lines == 0 then
    for i = 1, #cart, 2 do
      if string.sub(cart[i], 1, 2) == 'q:' then
        return {'held'}
      end
    end
    return {'lines'}
  end
  redis.call('HSET', KEYS[2], unpack(lines))
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[3], now_ms + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
table.insert(lines, 1, 'lines')
return lines
";

/// `finish(record, cart, held, end)`: ends a pending order record once.
/// `end` is `confirmed` (the order took its lines: they leave the cart) or
/// `cancelled` (they stay, free for another checkout). Returns 1 ended now,
/// 0 ended before. Lines added after the checkout stay; the cart's expiry is
/// left as it is (this is not the user's activity).
const FINISH: &str = r"
local function finish(order, cart, held, ending)
  if redis.call('HGET', order, 'state') ~= 'pending' then
    return 0
  end
  local record = redis.call('HGETALL', order)
  for i = 1, #record, 2 do
    local field = record[i]
    if string.sub(field, 1, 2) == 'l:' then
      local units = tonumber(record[i + 1])
      if redis.call('HINCRBY', held, field, -units) <= 0 then
        redis.call('HDEL', held, field)
      end
      if ending == 'confirmed' then
        local sku = string.sub(field, 3)
        local have = tonumber(redis.call('HGET', cart, 'q:' .. sku) or '0')
        local left = have - units
        if left > 0 then
          redis.call('HSET', cart, 'q:' .. sku, left)
        elseif have > 0 then
          redis.call('HDEL', cart, 'q:' .. sku, 'p:' .. sku)
        end
      end
      redis.call('HDEL', order, field)
    end
  end
  if redis.call('HLEN', cart) == 1 then
    redis.call('DEL', cart)
  end
  redis.call('HSET', order, 'state', 'done')
  return 1
end
";

/// KEYS: order record, in-flight set, held hash, cart, unsure set. ARGV:
/// idempotency key, record TTL ms, `open`, `confirmed` or `cancelled`, then
/// `l:<sku>`, units pairs. A record that exists (pending or done) is kept
/// as it is; a new one holds its units until its order ends, so no later
/// checkout takes them again. An order that has ended already is ended
/// here, as its event would have: none will come for it again.
const RECORD_CHECKOUT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'state', 'pending', unpack(ARGV, 4))
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  for i = 4, #ARGV, 2 do
    redis.call('HINCRBY', KEYS[3], ARGV[i], ARGV[i + 1])
  end
  redis.call('PEXPIRE', KEYS[3], ARGV[2])
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[5], ARGV[1])
if ARGV[3] ~= 'open' then
  finish(KEYS[1], KEYS[4], KEYS[3], ARGV[3])
end
return 1
";

/// KEYS: order record, cart, in-flight set, held hash. ARGV: `confirmed`
/// or `cancelled`. Returns 1 ended now, 0 ended before, -1 a checkout is in
/// flight, -2 no record.
const END_CHECKOUT: &str = r"
if not redis.call('HGET', KEYS[1], 'state') then
  local now = redis.call('TIME')
  local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now_ms)
  if redis.call('ZCARD', KEYS[3]) > 0 then
    return -1
  end
  return -2
end
return finish(KEYS[1], KEYS[2], KEYS[4], ARGV[1])
";

struct Scripts {
    add: Script,
    update: Script,
    remove: Script,
    begin_checkout: Script,
    record_checkout: Script,
    end_checkout: Script,
}

/// The carts of all users, over one shared, self-reconnecting connection.
#[derive(Clone)]
pub struct CartStore {
    redis: ConnectionManager,
    limits: Limits,
    expiries: Expiries,
    scripts: std::sync::Arc<Scripts>,
}

/// Script reply of a cart change: code, detail, PTTL, HGETALL.
type CartReply = (i64, String, i64, Vec<String>);

impl CartStore {
    /// Does not dial: the connection is made on first use and remade after
    /// failures, so the service starts (not ready) while Redis is down.
    pub fn new(url: &str, timeout: Duration, limits: Limits, expiries: Expiries) -> Result<Self, redis::RedisError> {
        // TCP_NODELAY: redis-rs leaves Nagle on, and a small command written
        // while an earlier one is unacknowledged then waits for the server's
        // delayed ACK — about 40 ms every few calls under load.
        let info = redis::IntoConnectionInfo::into_connection_info(url)?
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let client = redis::Client::open(info)?;
        // Commands wait for a reconnection in progress, so it is kept short
        // (one retry): while Redis is down a call fails within about two
        // connect timeouts instead of sitting through a long backoff.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let redis = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            redis,
            limits,
            expiries,
            scripts: std::sync::Arc::new(Scripts {
                add: Script::new(&format!("{ADD}{CART_REPLY}")),
                update: Script::new(&format!("{UPDATE}{CART_REPLY}")),
                remove: Script::new(&format!("{REMOVE}{CART_REPLY}")),
                begin_checkout: Script::new(BEGIN_CHECKOUT),
                record_checkout: Script::new(&format!("{FINISH}{RECORD_CHECKOUT}")),
                end_checkout: Script::new(&format!("{FINISH}{END_CHECKOUT}")),
            }),
        })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub async fn ping(&self) -> Result<(), redis::RedisError> {
        let mut conn = self.redis.clone();
        redis::cmd("PING").query_async::<String>(&mut conn).await.map(drop)
    }

    pub async fn get(&self, user: &UserId) -> Result<Cart, ApiError> {
        let mut conn = self.redis.clone();
        let key = cart_key(user);
        let (pttl, fields): (i64, Vec<String>) = redis::pipe()
            .atomic()
            .cmd("PTTL")
            .arg(&key)
            .cmd("HGETALL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .map_err(ApiError::internal(CARTS, "reading the cart"))?;
        parse_cart(pttl, &fields)
    }

    /// Adds `quantity` units, within the limits, and snapshots `product`.
    pub async fn add(&self, user: &UserId, sku: &Sku, quantity: Quantity, product: &Product) -> Result<Cart, ApiError> {
        let snapshot = serde_json::to_string(&Snapshot {
            name: product.name.clone(),
            unit_minor: product.unit_price.minor,
        })
        .map_err(ApiError::internal(CARTS, "encoding the product snapshot"))?;
        let mut conn = self.redis.clone();
        let reply: CartReply = self
            .scripts
            .add
            .key(cart_key(user))
            .arg(sku.as_str())
            .arg(quantity.get())
            .arg(snapshot)
            .arg(product.unit_price.currency.as_str())
            .arg(self.limits.max_lines)
            .arg(self.limits.max_quantity)
            .arg(millis(self.expiries.cart))
            .invoke_async(&mut conn)
            .await
            .map_err(ApiError::internal(CARTS, "adding to the cart"))?;
        let (code, detail, pttl, fields) = reply;
        match code {
            1 => parse_cart(pttl, &fields),
            -1 => Err(ApiError::invalid(
                "sku",
                format!(
                    "the cart already holds {detail} lines, the most it may hold ({}); remove one to add {sku}",
                    self.limits.max_lines
                ),
            )),
            -2 => Err(ApiError::invalid(
                "quantity",
                format!(
                    "at most {} units of {sku} per cart; it holds {detail}, so {} more would be too many",
                    self.limits.max_quantity,
                    quantity.get()
                ),
            )),
            -3 => Err(ApiError::invalid(
                "sku",
                format!(
                    "{sku} is priced in {}, the cart in {detail}; check out or clear the cart first",
                    product.unit_price.currency.as_str()
                ),
            )),
            other => Err(corrupt(format!("add script answered {other}"))),
        }
    }

    /// Sets the units of a line the cart holds.
    pub async fn update(&self, user: &UserId, sku: &Sku, quantity: Quantity) -> Result<Cart, ApiError> {
        let mut conn = self.redis.clone();
        let (code, _, pttl, fields): CartReply = self
            .scripts
            .update
            .key(cart_key(user))
            .arg(sku.as_str())
            .arg(quantity.get())
            .arg(millis(self.expiries.cart))
            .invoke_async(&mut conn)
            .await
            .map_err(ApiError::internal(CARTS, "updating a line"))?;
        match code {
            1 => parse_cart(pttl, &fields),
            -4 => Err(ApiError::NotFound(format!(
                "{sku} is not in the cart; add it with AddItem"
            ))),
            other => Err(corrupt(format!("update script answered {other}"))),
        }
    }

    pub async fn remove(&self, user: &UserId, sku: &Sku) -> Result<Cart, ApiError> {
        let mut conn = self.redis.clone();
        let (_, _, pttl, fields): CartReply = self
            .scripts
            .remove
            .key(cart_key(user))
            .arg(sku.as_str())
            .arg(millis(self.expiries.cart))
            .invoke_async(&mut conn)
            .await
            .map_err(ApiError::internal(CARTS, "removing a line"))?;
        parse_cart(pttl, &fields)
    }

    pub async fn clear(&self, user: &UserId) -> Result<Cart, ApiError> {
        let mut conn = self.redis.clone();
        redis::cmd("DEL")
            .arg(cart_key(user))
            .query_async::<i64>(&mut conn)
            .await
            .map_err(ApiError::internal(CARTS, "clearing the cart"))?;
        Ok(Cart {
            lines: Vec::new(),
            expires_at: None,
        })
    }

    /// The lines to order under `key`, and marks the checkout as in flight;
    /// or another key whose fate must be known first. Refused while another
    /// checkout of the cart awaits its order, and when there is nothing to
    /// order.
    pub async fn begin_checkout(&self, user: &UserId, key: &str) -> Result<Begun, ApiError> {
        let mut conn = self.redis.clone();
        let reply: Vec<String> = self
            .scripts
            .begin_checkout
            .key(cart_key(user))
            .key(checkout_key_key(user, key))
            .key(in_flight_key(user))
            .key(held_key(user))
            .key(unsure_key(user))
            .arg(key)
            .arg(millis(self.expiries.checkout))
            .arg(millis(self.expiries.in_flight))
            .invoke_async(&mut conn)
            .await
            .map_err(ApiError::internal(CARTS, "beginning a checkout"))?;
        let pairs = match reply.split_first() {
            Some((status, pairs)) if status == "lines" => pairs,
            Some((status, [other])) if status == "unsure" => return Ok(Begun::Unsure(other.clone())),
            Some((status, _)) if status == "busy" => {
                return Err(ApiError::FailedPrecondition(
                    "another checkout of this cart is waiting for its order; try again when it has answered".into(),
                ));
            }
            Some((status, _)) if status == "held" => {
                return Err(ApiError::FailedPrecondition(
                    "everything in the cart is in an order still under way: it leaves the cart when the order is \
                     confirmed, or can be checked out again if it is cancelled"
                        .into(),
                ));
            }
            _ => return Err(corrupt(format!("checkout script answered {reply:?}"))),
        };
        if pairs.is_empty() {
            return Err(ApiError::FailedPrecondition("cart is empty".into()));
        }
        let mut lines = Vec::with_capacity(pairs.len() / 2);
        for pair in pairs.chunks(2) {
            let [field, units] = pair else {
                return Err(corrupt("odd checkout record"));
            };
            let sku = field
                .strip_prefix("l:")
                .ok_or_else(|| corrupt(format!("checkout record field {field:?}")))?;
            let units = units
                .parse()
                .map_err(|_| corrupt(format!("checkout record units {units:?}")))?;
            lines.push((sku.to_owned(), units));
        }
        lines.sort();
        Ok(Begun::Lines(lines))
    }

    /// Remembers what `order_id`, placed under `key`, took from the cart:
    /// held until its end arrives, or let go at once when it has ended
    /// already.
    pub async fn record_checkout(
        &self,
        user: &UserId,
        key: &str,
        order_id: &str,
        lines: &[CheckoutLine],
        state: OrderState,
    ) -> Result<(), ApiError> {
        let mut conn = self.redis.clone();
        let mut invocation = self.scripts.record_checkout.key(checkout_key(user, order_id));
        invocation
            .key(in_flight_key(user))
            .key(held_key(user))
            .key(cart_key(user))
            .key(unsure_key(user))
            .arg(key)
            .arg(millis(self.expiries.checkout))
            .arg(match state {
                OrderState::Open => "open",
                OrderState::Ended(end) => end.as_str(),
            });
        for (sku, units) in lines {
            invocation.arg(format!("l:{sku}")).arg(*units);
        }
        invocation
            .invoke_async::<i64>(&mut conn)
            .await
            .map_err(ApiError::internal(CARTS, "recording the checkout"))?;
        Ok(())
    }

    /// PlaceOrder under `key` did not answer with an order.
    pub async fn abandon_checkout(&self, user: &UserId, key: &str, known: Unanswered) -> Result<(), ApiError> {
        let mut conn = self.redis.clone();
        let mut pipe = redis::pipe();
        pipe.atomic();
        match known {
            Unanswered::NoOrder => {
                pipe.cmd("DEL").arg(checkout_key_key(user, key)).ignore();
                pipe.cmd("ZREM").arg(in_flight_key(user)).arg(key).ignore();
            }
            // The in-flight mark stays until its deadline: until then the
            // call may still be placing the order.
            Unanswered::MaybePlaced => {
                pipe.cmd("SADD").arg(unsure_key(user)).arg(key).ignore();
                pipe.cmd("PEXPIRE")
                    .arg(unsure_key(user))
                    .arg(millis(self.expiries.checkout))
                    .ignore();
            }
        }
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(ApiError::internal(CARTS, "abandoning the checkout"))?;
        Ok(())
    }

    /// svc-order has no order under `key`, an unsure checkout's, and can no
    /// longer make one: the lines it pinned are free, and a retry under the
    /// key reads the cart afresh.
    pub async fn forget_unsure(&self, user: &UserId, key: &str) -> Result<(), ApiError> {
        let mut conn = self.redis.clone();
        redis::pipe()
            .atomic()
            .cmd("DEL")
            .arg(checkout_key_key(user, key))
            .ignore()
            .cmd("SREM")
            .arg(unsure_key(user))
            .arg(key)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(ApiError::internal(CARTS, "forgetting an unanswered checkout"))?;
        Ok(())
    }

    /// Lets go of what `order_id` took from the cart, once: removed when the
    /// order was confirmed, free again when it was cancelled.
    pub async fn end_checkout(&self, user: &UserId, order_id: &str, end: OrderEnd) -> Result<Ended, ApiError> {
        let mut conn = self.redis.clone();
        let code: i64 = self
            .scripts
            .end_checkout
            .key(checkout_key(user, order_id))
            .key(cart_key(user))
            .key(in_flight_key(user))
            .key(held_key(user))
            .arg(end.as_str())
            .invoke_async(&mut conn)
            .await
            .map_err(ApiError::internal(CARTS, "ending a checkout"))?;
        match code {
            1 => Ok(Ended::Now),
            0 => Ok(Ended::Already),
            -1 => Ok(Ended::CheckoutInFlight),
            -2 => Ok(Ended::NotFromCart),
            other => Err(corrupt(format!("end-of-checkout script answered {other}"))),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The user id as a hash tag. `{`, `}` and `%` are escaped so the tag ends
/// at the first `}` and no two users' keys can ever coincide.
fn user_tag(user: &UserId) -> String {
    let mut tag = String::with_capacity(user.as_str().len() + 2);
    tag.push('{');
    for c in user.as_str().chars() {
        match c {
            '%' => tag.push_str("%25"),
            '{' => tag.push_str("%7B"),
            '}' => tag.push_str("%7D"),
            c => tag.push(c),
        }
    }
    tag.push('}');
    tag
}

pub fn cart_key(user: &UserId) -> String {
    format!("cart:{}", user_tag(user))
}

fn checkout_key(user: &UserId, order_id: &str) -> String {
    format!("checkout:{}:{order_id}", user_tag(user))
}

fn checkout_key_key(user: &UserId, idempotency_key: &str) -> String {
    format!("checkout-key:{}:{idempotency_key}", user_tag(user))
}

fn in_flight_key(user: &UserId) -> String {
    format!("checkout-inflight:{}", user_tag(user))
}

/// Units per SKU (`l:<sku>`) that orders still under way took from the cart.
fn held_key(user: &UserId) -> String {
    format!("checkout-held:{}", user_tag(user))
}

/// Idempotency keys whose PlaceOrder went unanswered.
fn unsure_key(user: &UserId) -> String {
    format!("checkout-unsure:{}", user_tag(user))
}

fn parse_cart(pttl: i64, fields: &[String]) -> Result<Cart, ApiError> {
    let mut map = BTreeMap::new();
    for pair in fields.chunks(2) {
        if let [field, value] = pair {
            map.insert(field.as_str(), value.as_str());
        }
    }
    let currency = match map.get("c") {
        Some(raw) => Some(Currency::parse(raw).map_err(corrupt)?),
        None => None,
    };
    let mut lines = Vec::new();
    for (field, value) in &map {
        let Some(sku) = field.strip_prefix("q:") else {
            continue;
        };
        let quantity: i32 = value
            .parse()
            .map_err(|_| corrupt(format!("units of {sku}: {value:?}")))?;
        let snapshot: Snapshot = map
            .get(format!("p:{sku}").as_str())
            .ok_or_else(|| corrupt(format!("{sku} has no snapshot")))
            .and_then(|raw| serde_json::from_str(raw).map_err(|e| corrupt(format!("snapshot of {sku}: {e}"))))?;
        let currency = currency.ok_or_else(|| corrupt("a cart with lines has no currency"))?;
        lines.push(Line {
            sku: sku.to_owned(),
            name: snapshot.name,
            quantity,
            unit_price: Money::new(currency, snapshot.unit_minor),
        });
    }
    let expires_at = match pttl {
        ms if ms > 0 => Some(Utc::now() + chrono::Duration::milliseconds(ms)),
        -1 => {
            tracing::error!("a cart key has no expiry");
            None
        }
        _ => None,
    };
    Ok(Cart {
        lines,
        expires_at: if map.is_empty() { None } else { expires_at },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(raw: &str) -> UserId {
        UserId::parse(raw).expect("valid user id")
    }

    #[test]
    fn keys_of_different_users_never_coincide() {
        assert_eq!(cart_key(&user("alice")), "cart:{alice}");
        assert_ne!(
            checkout_key_key(&user("a}:x"), "k"),
            checkout_key_key(&user("a"), "x}:k"),
            "a brace in a user id cannot end the tag early"
        );
        assert_eq!(cart_key(&user("%7D")), "cart:{%257D}");
    }

    #[test]
    fn a_stored_cart_parses_into_lines_by_sku_with_a_checked_total() {
        let fields: Vec<String> = [
            ("c", "EUR"),
            ("q:SKU-B", "2"),
            ("p:SKU-B", r#"{"name":"B","unit_minor":250}"#),
            ("q:SKU-A", "1"),
            ("p:SKU-A", r#"{"name":"A","unit_minor":1000}"#),
        ]
        .iter()
        .flat_map(|(k, v)| [(*k).to_owned(), (*v).to_owned()])
        .collect();
        let cart = parse_cart(60_000, &fields).expect("parses");
        assert_eq!(
            cart.lines.iter().map(|l| l.sku.as_str()).collect::<Vec<_>>(),
            ["SKU-A", "SKU-B"]
        );
        assert_eq!(cart.total().expect("fits").map(|m| m.minor), Some(1500));
        assert!(cart.expires_at.is_some());

        let empty = parse_cart(-2, &[]).expect("parses");
        assert_eq!(empty.total().expect("fits"), None);
        assert_eq!(empty.expires_at, None);
    }

    #[test]
    fn an_overflowing_total_is_an_error() {
        let eur = Currency::parse("EUR").expect("valid");
        let line = |sku: &str| Line {
            sku: sku.into(),
            name: sku.into(),
            quantity: 99,
            unit_price: Money::new(eur, i64::MAX / 100),
        };
        let cart = Cart {
            lines: vec![line("A"), line("B")],
            expires_at: None,
        };
        assert!(matches!(cart.total(), Err(ApiError::FailedPrecondition(_))));
    }
}
