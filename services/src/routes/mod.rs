//! The routes service (SPEC §4.3, §11.3 item 27): the valid lines of `/iohub/routes` (config
//! section `routes`) installed in the main table through rtnetlink, marked with
//! [`PROTO_ROUTES`](sys::netlink::PROTO_ROUTES), and diffed against the kernel on every
//! change of the section or of the network state (so a route whose gateway became reachable is
//! retried then). It does not depend on the firewall. Refused lines, unreachable gateways and
//! conflicts are in the state facts ([`state::RoutesFacts`]); the other lines still apply.

pub mod plan;
pub mod state;

use bus_schema::sections::Routes;
use bus_schema::{BusError, ErrorCode, Phase, Section, ServiceName, ServiceState, Verb};

use crate::ctx::{now_ms, Backend, ServiceCtx};
use crate::reconcile::{reply_err, reply_ok, Input, Inputs};
use plan::{NotApplied, RoutesPlan};
use state::RoutesFacts;
use sys::netlink::{KernelView, NetOp, Netlink};

fn io(e: impl std::fmt::Display) -> BusError {
    BusError::new(ErrorCode::Io, e.to_string())
}

/// One run of the routes service.
pub async fn run(ctx: ServiceCtx) -> Result<(), BusError> {
    let mut inputs = Inputs::subscribe(&ctx, &[ServiceName::Network]).await?;
    let nl = match ctx.backend {
        Backend::Live => Some(Netlink::connect().map_err(io)?),
        Backend::PlanOnly => Netlink::connect().ok(),
    };
    ctx.publish_state(&ServiceState::new(Phase::Applying, 0, now_ms()))
        .await
        .map_err(io)?;
    let mut last: Option<RoutesFacts> = None;
    while let Some(input) = inputs.next().await {
        match input {
            Input::Changed => {
                if let Some(f) = reconcile(&ctx, &inputs, nl.as_ref()).await {
                    last = Some(f);
                }
            }
            Input::Command(Verb::Reload, request) => {
                let facts = reconcile(&ctx, &inputs, nl.as_ref()).await;
                if let Some(f) = &facts {
                    last = Some(f.clone());
                }
                reply_ok(
                    &ctx,
                    &request,
                    serde_json::to_value(&facts).unwrap_or_default(),
                )
                .await;
            }
            Input::Command(Verb::Status | Verb::Get, request) => {
                reply_ok(
                    &ctx,
                    &request,
                    serde_json::to_value(&last).unwrap_or_default(),
                )
                .await;
            }
            Input::Command(other, request) => {
                let e = BusError::new(
                    ErrorCode::Unavailable,
                    format!("routes does not support `{other}`"),
                );
                reply_err(&ctx, &request, vec![e]).await;
            }
        }
    }
    Ok(())
}

async fn reconcile(ctx: &ServiceCtx, inputs: &Inputs, nl: Option<&Netlink>) -> Option<RoutesFacts> {
    let generation = inputs.latest.generation();
    let routes = match inputs.latest.section::<Routes>(Section::Routes)? {
        Ok((_, r)) => r,
        Err(e) => {
            let mut st = ServiceState::new(Phase::Degraded, generation, now_ms());
            st.last_error = Some(e);
            let _ = ctx.publish_state(&st).await;
            return None;
        }
    };
    let kernel = match nl {
        Some(nl) => match nl.snapshot().await {
            Ok(k) => k,
            Err(e) => {
                let mut st = ServiceState::new(Phase::Degraded, generation, now_ms());
                st.last_error = Some(io(e));
                let _ = ctx.publish_state(&st).await;
                return None;
            }
        },
        None => KernelView::default(),
    };
    let mut plan = plan::plan(&routes, &kernel);
    let mut errors = Vec::new();
    let mut applied = 0;
    if ctx.backend == Backend::Live {
        if let Some(nl) = nl {
            applied = apply(nl, &mut plan, &mut errors).await;
        }
    }
    let published = serde_json::json!({
        "backend": ctx.backend,
        "plan": &plan,
        "applied_ops": applied,
    });
    if let Err(e) = ctx.publish_plan(&published).await {
        tracing::warn!(error = %e, "routes plan not published");
    }
    let facts = state::facts(&plan, errors);
    let st = state::state(&facts, generation);
    if let Err(e) = ctx.publish_state(&st).await {
        tracing::warn!(error = %e, "routes state not published");
    }
    Some(facts)
}

/// Carry out the ops; a route the kernel refuses as unreachable moves to `unreachable`.
async fn apply(nl: &Netlink, plan: &mut RoutesPlan, errors: &mut Vec<String>) -> usize {
    let mut done = 0;
    for op in plan.ops.clone() {
        match nl.execute(&op).await {
            Ok(()) => done += 1,
            Err(e) => {
                if let NetOp::ReplaceRoute { dest, gateway, .. } = &op {
                    if let Some(i) = plan.installed.iter().position(|r| r.dest == *dest) {
                        let r = plan.installed.remove(i);
                        let reason = if e.is_unreachable() {
                            format!("gateway {gateway} is unreachable: {e}")
                        } else {
                            e.to_string()
                        };
                        plan.unreachable.push(NotApplied {
                            line: r.line,
                            dest: r.dest,
                            gateway: r.gateway,
                            reason,
                        });
                        continue;
                    }
                }
                errors.push(e.to_string());
            }
        }
    }
    done
}
