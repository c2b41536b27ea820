//! The supervisor against the real broker: restarts with backoff, failures published in the
//! service's retained state, the other services unaffected, bounded shutdown.

// Helpers outside #[test] fns: a failed fixture step fails the test.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker::{Broker, Bus, RouterLimits, Subscription};
use bus_schema::topic::filter;
use bus_schema::{
    BusError, ErrorCode, Phase, Reply, Request, ServiceName, ServiceState, Topic, Verb,
};
use services::supervisor::{ServiceSpec, Supervisor};
use services::{Backend, Paths, ServiceCtx};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

fn base_ctx(bus: Bus) -> ServiceCtx {
    ServiceCtx {
        // Replaced per service by the supervisor.
        name: ServiceName::Iohubd,
        bus,
        paths: Paths::new("/nonexistent/root", "/nonexistent/system"),
        backend: Backend::PlanOnly,
        endpoints: services::settings::Endpoints::ephemeral(),
        shutdown: CancellationToken::new(),
        restarts: 0,
    }
}

async fn next(sub: &mut Subscription) -> broker::Message {
    tokio::time::timeout(Duration::from_secs(20), sub.recv())
        .await
        .expect("no bus message within 20 s")
        .expect("bus closed")
}

/// Service states as they arrive; states of other services are kept for later waits.
struct States {
    sub: Subscription,
    seen: Vec<(String, ServiceState)>,
}

impl States {
    async fn new(bus: &Bus) -> States {
        States {
            sub: bus.subscribe(&["iohub/state/+"]).await.unwrap(),
            seen: Vec::new(),
        }
    }

    /// The first state of `service` (not yet returned) matching `pred`.
    async fn wait(
        &mut self,
        service: ServiceName,
        pred: impl Fn(&ServiceState) -> bool,
    ) -> ServiceState {
        let topic = Topic::state(service).to_string();
        if let Some(i) = self.seen.iter().position(|(t, s)| *t == topic && pred(s)) {
            return self.seen.remove(i).1;
        }
        loop {
            let msg = next(&mut self.sub).await;
            let state: ServiceState = msg.json().unwrap();
            if msg.topic == topic && pred(&state) {
                return state;
            }
            self.seen.push((msg.topic, state));
        }
    }
}

/// Answers every `iohub/cmd/network/*` request with `{"run": restarts}`.
fn answering_service(runs: Arc<AtomicU32>) -> ServiceSpec {
    ServiceSpec::new(ServiceName::Network, move |ctx| {
        runs.fetch_add(1, Ordering::SeqCst);
        async move {
            let err =
                |e: broker::BusClientError| BusError::new(ErrorCode::Unavailable, e.to_string());
            let mut cmds = ctx
                .bus
                .subscribe(&[&filter::cmds(ServiceName::Network)])
                .await
                .map_err(err)?;
            ctx.publish_state(&ServiceState::new(Phase::Applied, 0, 0))
                .await
                .map_err(err)?;
            loop {
                tokio::select! {
                    () = ctx.shutdown.cancelled() => return Ok(()),
                    msg = cmds.recv() => {
                        let Some(msg) = msg else { return Ok(()) };
                        let request: Request = msg.json()?;
                        let reply = Reply::ok(&request.id, serde_json::json!({ "run": ctx.restarts }));
                        ctx.bus.reply(&request, &reply).await.map_err(err)?;
                    }
                }
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_service_is_restarted_its_failure_is_published_and_the_others_keep_answering() {
    let broker = Broker::start(RouterLimits::default()).unwrap();
    let bus = broker.bus();
    let mut states = States::new(&bus).await;
    let mut events = bus.subscribe(&["iohub/event/+/+"]).await.unwrap();

    let answering_runs = Arc::new(AtomicU32::new(0));
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let panicking = ServiceSpec::new(ServiceName::Firewall, move |ctx| {
        let mut release = release_rx.clone();
        async move {
            if ctx.restarts == 0 {
                panic!("boom in run {}", ctx.restarts);
            }
            // The restarted run waits until the test has talked to the other service.
            let _ = release.wait_for(|go| *go).await;
            ctx.publish_state(&ServiceState::new(Phase::Applied, 0, 0))
                .await
                .map_err(|e| BusError::new(ErrorCode::Unavailable, e.to_string()))?;
            ctx.shutdown.cancelled().await;
            Ok(())
        }
    });
    let sup = Supervisor::start(
        vec![answering_service(answering_runs.clone()), panicking],
        base_ctx(bus.clone()),
    );

    let failed = states
        .wait(ServiceName::Firewall, |s| s.phase == Phase::Failed)
        .await;
    let error = failed.last_error.expect("a failed state carries its error");
    assert_eq!(error.code, ErrorCode::Panic);
    assert!(error.message.contains("boom in run 0"), "{error}");
    assert_eq!(failed.restarts, 0);

    // The other service is up and answers while the failed one restarts.
    states
        .wait(ServiceName::Network, |s| s.phase == Phase::Applied)
        .await;
    let reply = bus
        .request(
            ServiceName::Network,
            Verb::Status,
            serde_json::json!({}),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert!(reply.ok);
    assert_eq!(reply.result, Some(serde_json::json!({ "run": 0 })));
    release_tx.send(true).unwrap();

    let applied = states
        .wait(ServiceName::Firewall, |s| s.phase == Phase::Applied)
        .await;
    assert_eq!(
        applied.restarts, 1,
        "the restarted run knows it was restarted"
    );
    loop {
        let msg = next(&mut events).await;
        if msg.topic == "iohub/event/firewall/service_restarted" {
            let event: serde_json::Value = msg.json().unwrap();
            assert_eq!(event["restarts"], 1);
            assert_eq!(event["backoff_ms"], 100);
            assert_eq!(event["last_error"]["code"], "panic");
            break;
        }
    }

    // The retained state is what a late subscriber sees.
    let mut late = States::new(&bus).await;
    let retained = late.wait(ServiceName::Firewall, |_| true).await;
    assert_eq!(retained.phase, Phase::Applied);

    assert!(sup.shutdown(Duration::from_secs(5)).await.is_empty());
    assert_eq!(
        answering_runs.load(Ordering::SeqCst),
        1,
        "the healthy service was never restarted"
    );
    broker.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_returns_before_shutdown_is_restarted_too() {
    let broker = Broker::start(RouterLimits::default()).unwrap();
    let bus = broker.bus();
    let mut states = States::new(&bus).await;
    let spec = ServiceSpec::new(ServiceName::Routes, |ctx| async move {
        if ctx.restarts < 2 {
            return Ok(());
        }
        ctx.publish_state(&ServiceState::new(Phase::Applied, 0, 0))
            .await
            .unwrap();
        ctx.shutdown.cancelled().await;
        Ok(())
    });
    let sup = Supervisor::start(vec![spec], base_ctx(bus.clone()));
    let failed = states
        .wait(ServiceName::Routes, |s| s.phase == Phase::Failed)
        .await;
    assert_eq!(failed.last_error.unwrap().code, ErrorCode::Internal);
    let applied = states
        .wait(ServiceName::Routes, |s| s.phase == Phase::Applied)
        .await;
    assert_eq!(applied.restarts, 2);
    assert!(sup.shutdown(Duration::from_secs(5)).await.is_empty());
    broker.shutdown(Duration::from_secs(1)).await;
}

// The paused-clock tests never put a timeout around a bus receive: with a paused clock, tokio
// jumps to the next timer whenever the runtime is idle, which includes waiting for the broker's
// threads.

#[tokio::test(start_paused = true)]
async fn backoff_doubles_between_restarts_and_starts_over_after_a_healthy_run() {
    let broker = Broker::start(RouterLimits::default()).unwrap();
    let starts = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let spec = {
        let starts = starts.clone();
        ServiceSpec::new(ServiceName::Dhcp, move |ctx| {
            starts.lock().unwrap().push(Instant::now());
            let done_tx = done_tx.clone();
            async move {
                match ctx.restarts {
                    // Five quick failures.
                    0..=4 => Err(BusError::new(
                        ErrorCode::Io,
                        format!("failure {}", ctx.restarts),
                    )),
                    // A healthy minute, then a failure: the backoff starts over.
                    5 => {
                        tokio::time::sleep(Duration::from_secs(61)).await;
                        Err(BusError::new(ErrorCode::Io, "after a healthy minute"))
                    }
                    6 => Err(BusError::new(ErrorCode::Io, "quick again")),
                    _ => {
                        let _ = done_tx.send(());
                        ctx.shutdown.cancelled().await;
                        Ok(())
                    }
                }
            }
        })
    };
    let sup = Supervisor::start(vec![spec], base_ctx(broker.bus()));
    done_rx.recv().await.unwrap();

    let starts = starts.lock().unwrap().clone();
    let gaps: Vec<u128> = starts
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    let expected = [100, 200, 400, 800, 1600, 61_000 + 100, 200];
    assert_eq!(gaps.len(), expected.len(), "{gaps:?}");
    for (gap, want) in gaps.iter().zip(expected) {
        assert!(
            *gap >= want && *gap < want + 50,
            "gaps {gaps:?}, expected {expected:?}"
        );
    }
    assert!(sup.shutdown(Duration::from_secs(5)).await.is_empty());
    broker.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_is_bounded_even_when_a_service_ignores_cancellation() {
    let broker = Broker::start(RouterLimits::default()).unwrap();
    let (started_tx, mut started_rx) = mpsc::unbounded_channel();
    let stubborn_dropped = Arc::new(AtomicBool::new(false));

    struct SetOnDrop(Arc<AtomicBool>);
    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    let stubborn = {
        let (started_tx, dropped) = (started_tx.clone(), stubborn_dropped.clone());
        ServiceSpec::new(ServiceName::Apps, move |_ctx| {
            let (started_tx, guard) = (started_tx.clone(), SetOnDrop(dropped.clone()));
            async move {
                let _guard = guard;
                let _ = started_tx.send(ServiceName::Apps);
                // Ignores `ctx.shutdown`.
                loop {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
            }
        })
    };
    let polite = ServiceSpec::new(ServiceName::Ssh, move |ctx| {
        let started_tx = started_tx.clone();
        async move {
            let _ = started_tx.send(ServiceName::Ssh);
            ctx.shutdown.cancelled().await;
            Ok(())
        }
    });
    let sup = Supervisor::start(vec![stubborn, polite], base_ctx(broker.bus()));
    assert_eq!(sup.services(), [ServiceName::Apps, ServiceName::Ssh]);
    started_rx.recv().await.unwrap();
    started_rx.recv().await.unwrap();

    let asked = Instant::now();
    let stragglers = sup.shutdown(Duration::from_secs(5)).await;
    let took = asked.elapsed();
    assert_eq!(stragglers, [ServiceName::Apps]);
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(6),
        "{took:?}"
    );
    // The aborted task is dropped at its next poll.
    for _ in 0..100 {
        if stubborn_dropped.load(Ordering::SeqCst) {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(
        stubborn_dropped.load(Ordering::SeqCst),
        "the straggler was not aborted"
    );
    broker.shutdown(Duration::from_secs(1)).await;
}
