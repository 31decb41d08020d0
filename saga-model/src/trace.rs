//! A discovery as a readable trace: one line per step (who acted, on
//! what), then each order as it stands after that step.

use std::fmt::Write as _;

use stateright::{Model as _, Path};

use crate::{
    Action, CallOutcome, Fate, Participant, Shop, State,
    world::{Origin, Stage},
};

/// Who takes `action`, and what it does.
pub fn describe(action: &Action) -> (String, String) {
    match action {
        Action::Deliver {
            consumer,
            msg,
            duplicate,
        } => (
            format!("{:?}", consumer.participant()),
            format!(
                "{} hears {} of order {}{}",
                consumer.name(),
                msg.event.subject(),
                msg.order,
                if *duplicate { " (its ack is lost)" } else { "" }
            ),
        ),
        Action::Cancel(o) => ("customer".into(), format!("asks to cancel order {o}")),
        Action::Tick(o) => ("clock".into(), format!("order {o}'s reservation passes its deadline")),
        Action::Rival { rival, trigger } => (
            "rival".into(),
            format!("rival order {rival}'s reservation hears {trigger:?}"),
        ),
        Action::Overdue(o) => (
            format!("{:?}", Participant::Order),
            format!("deadline sweep finds order {o}"),
        ),
        Action::Expire(o) => (
            format!("{:?}", Participant::Inventory),
            format!("expiry sweeper finds order {o}'s reservation"),
        ),
        Action::Call { task, outcome } => {
            let call = match task.stage {
                Stage::Calling(call) => format!("{call:?}"),
                Stage::RefundCalling { refund, attempt } => format!("Refund {refund} (attempt {attempt})"),
                _ => "call".into(),
            };
            let how = match outcome {
                CallOutcome::Answered => "acts and answers",
                CallOutcome::Unavailable => "is unavailable",
                CallOutcome::LostAfter => "acts; the answer is lost",
                CallOutcome::LostBefore => "never gets it; the caller times out",
            };
            ("provider".into(), format!("{call} for order {}: {how}", task.order))
        }
        Action::Step(task) => (
            format!("{:?}", task.participant()),
            match task.stage {
                Stage::Answered(input) => format!("order {}: decides on {input:?}{}", task.order, read(task.origin)),
                Stage::RefundAnswered { refund, input } => {
                    format!(
                        "order {}: refund {refund} decides on {input:?}{}",
                        task.order,
                        read(task.origin)
                    )
                }
                Stage::Read(read) => format!("order {}: writes what it read ({read:?})", task.order),
                Stage::Calling(_) | Stage::RefundCalling { .. } => format!("order {}: next step", task.order),
            },
        ),
        Action::Crash(p) => (format!("{p:?}"), "crashes; its handlers in progress are lost".into()),
        Action::Webhook { order, fate } => (
            "provider".into(),
            match fate {
                Fate::Delivered => {
                    format!("a webhook about order {order}'s charge comes; svc-payment reads the charge")
                }
                Fate::Duplicated => {
                    format!(
                        "a webhook about order {order}'s charge comes (its 200 is lost); svc-payment reads the charge"
                    )
                }
                Fate::Lost => format!("a webhook about order {order}'s charge is lost"),
            },
        ),
        Action::Reconcile(o) => (
            format!("{:?}", Participant::Payment),
            format!("reconciliation reads order {o}'s charge from the provider"),
        ),
        Action::Provider { order, key, input } => (
            "provider".into(),
            format!("order {order}'s intent (key {key}) hears {input:?}"),
        ),
        Action::RefundSettles {
            order,
            refund,
            attempt,
            succeeded,
        } => (
            "provider".into(),
            format!(
                "order {order}'s refund {refund} (attempt {attempt}) {}",
                if *succeeded { "goes through" } else { "fails" }
            ),
        ),
        Action::RefundOrder { order, amount } => {
            ("admin".into(), format!("asks a refund of {amount} of order {order}"))
        }
    }
}

/// How what a handler decides on came, when it was read from the provider.
fn read(origin: Origin) -> &'static str {
    match origin {
        Origin::Webhook => " (read after a webhook)",
        Origin::Reconciliation => " (read by reconciliation)",
        Origin::Delivery(..) | Origin::Expiry => "",
    }
}

/// The trace of `path`, step by step.
pub fn render(shop: &Shop, path: Path<State, Action>) -> String {
    let mut out = String::new();
    let steps = path.into_vec();
    if let Some((first, _)) = steps.first() {
        let _ = writeln!(out, "start:");
        orders(&mut out, first);
    }
    for (i, (state, action)) in steps.iter().enumerate() {
        let Some(action) = action else { continue };
        let (who, what) = describe(action);
        let _ = writeln!(out, "step {:>2}  {who:<9}  {what}", i + 1);
        if let Some(next) = shop.next_state(state, *action) {
            orders(&mut out, &next);
        }
    }
    out
}

fn orders(out: &mut String, state: &State) {
    for (o, order) in state.orders.iter().enumerate() {
        let _ = writeln!(out, "           order {o} ({:?} card): {order}", order.card);
    }
    for (r, rival) in state.rivals.iter().enumerate() {
        let _ = writeln!(out, "           rival {r}: stock {:?}", rival.reservation);
    }
    let _ = writeln!(
        out,
        "           stock: {} on hand, {} reserved",
        state.units.on_hand, state.units.reserved
    );
}
