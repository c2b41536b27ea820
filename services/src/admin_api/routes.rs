//! The route table: one entry per operation, holding both the handler and its documentation.
//! The router ([`router`]) and the OpenAPI document ([`super::openapi::document`]) are both
//! built from [`ROUTES`], so a served route is documented and a documented route is served by
//! construction; the integration test checks it over HTTP all the same.

use std::collections::BTreeMap;
use std::convert::Infallible;

use axum::extract::DefaultBodyLimit;
use axum::extract::Request;
use axum::middleware::{from_fn, from_fn_with_state, Next};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};

use super::http::{guard, limit_body, not_found, Api, BODY_LIMIT_BYTES};
use super::{openapi, v1, v2};

/// HTTP method of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Post => "post",
        }
    }
}

/// The request body an operation takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyDoc {
    None,
    /// `compose` and `enabled`, form-urlencoded or JSON.
    Deploy,
    /// `{"vars": {...}}`.
    SetVars,
    /// A zip archive.
    Zip,
}

/// What a response carries. Nothing is sent as `text/html`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    None,
    /// `text/plain`.
    Text,
    /// `application/json` of any shape.
    Json,
    /// `application/json` following a schema of the document's `components/schemas`.
    Schema(&'static str),
    /// The error body ([`super::http::ErrorBody`], schema `Error`) as `application/json`, or
    /// one of the original's text answers (`Invalid app name`, `Bad Request`) as `text/plain`.
    TextOrError,
    /// `text/event-stream`; each event's data is an `Event`.
    EventStream,
}

/// One documented response.
#[derive(Debug, Clone, Copy)]
pub struct ResponseDoc {
    pub status: u16,
    pub description: &'static str,
    pub content: Content,
}

const fn resp(status: u16, description: &'static str, content: Content) -> ResponseDoc {
    ResponseDoc {
        status,
        description,
        content,
    }
}

/// One operation: documentation and handler.
pub struct Route {
    pub method: Method,
    /// Path in axum and OpenAPI syntax (`/v1/app/{app}`).
    pub path: &'static str,
    pub operation_id: &'static str,
    pub summary: &'static str,
    pub tag: &'static str,
    /// Served without a token.
    pub public: bool,
    pub body: BodyDoc,
    pub responses: &'static [ResponseDoc],
    pub handler: fn() -> MethodRouter<Api>,
}

impl Route {
    /// The largest request body of the operation; past it, 413 ([`super::http::limit_body`]).
    pub fn body_limit(&self) -> usize {
        match self.body {
            BodyDoc::Zip => v2::UPLOAD_LIMIT_BYTES,
            BodyDoc::None | BodyDoc::Deploy | BodyDoc::SetVars => BODY_LIMIT_BYTES,
        }
    }
}

const APP_400: ResponseDoc = resp(
    400,
    "`Invalid app name` (text), or `{\"error\": ...}`",
    Content::TextOrError,
);
const UNAVAILABLE: ResponseDoc = resp(
    503,
    "The owning service is not running or did not answer in time",
    Content::TextOrError,
);

/// Every operation of the API.
pub const ROUTES: &[Route] = &[
    Route {
        method: Method::Get,
        path: "/v1/app",
        operation_id: "listApps",
        summary: "Names of every sub-directory of the apps folder",
        tag: "v1",
        public: false,
        body: BodyDoc::None,
        responses: &[
            resp(
                200,
                "JSON array of app names (empty when there is no apps folder)",
                Content::Schema("AppNames"),
            ),
            resp(
                400,
                "`{\"error\": \"cannot load the applications\"}` (the apps folder does not read)",
                Content::TextOrError,
            ),
        ],
        handler: || get(v1::list),
    },
    Route {
        method: Method::Get,
        path: "/v1/app/{app}",
        operation_id: "getApp",
        summary: "Whether the app is enabled, and its compose text",
        tag: "v1",
        public: false,
        body: BodyDoc::None,
        responses: &[
            resp(
                200,
                "`{\"enabled\": bool, \"compose\": text}`",
                Content::Schema("App"),
            ),
            APP_400,
        ],
        handler: || get(v1::show),
    },
    Route {
        method: Method::Get,
        path: "/v1/app/{app}/status",
        operation_id: "getAppStatus",
        summary: "Whether the app is enabled (start.sh is a regular file with the 0755 bits)",
        tag: "v1",
        public: false,
        body: BodyDoc::None,
        responses: &[
            resp(
                200,
                "`{\"enabled\": bool}`; an unknown app is disabled",
                Content::Schema("AppStatus"),
            ),
            resp(400, "`Invalid app name`", Content::TextOrError),
        ],
        handler: || get(v1::status),
    },
    Route {
        method: Method::Get,
        path: "/v1/app/{app}/compose",
        operation_id: "getAppCompose",
        summary: "The raw docker-compose.yml text",
        tag: "v1",
        public: false,
        body: BodyDoc::None,
        responses: &[resp(200, "The compose text", Content::Text), APP_400],
        handler: || get(v1::compose_file),
    },
    Route {
        method: Method::Post,
        path: "/v1/app/{app}/enable",
        operation_id: "enableApp",
        summary: "Enable the app at boot (iohub/cmd/apps/enable)",
        tag: "v1",
        public: false,
        body: BodyDoc::None,
        responses: &[resp(200, "`Enabled`", Content::Text), APP_400, UNAVAILABLE],
        handler: || post(v1::enable),
    },
    Route {
        method: Method::Post,
        path: "/v1/app/{app}/disable",
        operation_id: "disableApp",
        summary: "Disable the app at boot (iohub/cmd/apps/disable)",
        tag: "v1",
        public: false,
        body: BodyDoc::None,
        responses: &[resp(200, "`Disabled`", Content::Text), APP_400, UNAVAILABLE],
        handler: || post(v1::disable),
    },
    Route {
        method: Method::Post,
        path: "/v1/app/{app}/deploy",
        operation_id: "deployApp",
        summary: "Install compose text as an app (a deploy zip handed to the deployer); \
                  with `enabled`, a start.sh of fixed text. The token is root-equivalent: a \
                  compose may run privileged containers and mount the host, unless \
                  IOHUBOS_ADMIN_API_COMPOSE_POLICY=restricted",
        tag: "v1",
        public: false,
        body: BodyDoc::Deploy,
        responses: &[
            resp(201, "`Deployed`", Content::Text),
            resp(
                400,
                "`Invalid app name`, `{\"error\": \"not in yaml format\"}`, \
                 `{\"error\": \"refused by the compose policy\"}` (one `detail` per \
                 offending key) or `{\"error\": \"cannot save the application\"}`",
                Content::TextOrError,
            ),
            UNAVAILABLE,
        ],
        handler: || post(v1::deploy),
    },
    Route {
        method: Method::Post,
        path: "/v1/app/{app}/undeploy",
        operation_id: "undeployApp",
        summary: "Remove the app (iohub/cmd/apps/remove)",
        tag: "v1",
        public: false,
        body: BodyDoc::None,
        responses: &[
            resp(200, "`Undeployed`", Content::Text),
            APP_400,
            UNAVAILABLE,
        ],
        handler: || post(v1::undeploy),
    },
    Route {
        method: Method::Post,
        path: "/v1/admin/reboot/{seconds}",
        operation_id: "reboot",
        summary:
            "Clean reboot after max(3, seconds) seconds (iohub/cmd/iohubd/reboot; never SysRq)",
        tag: "v1",
        public: false,
        body: BodyDoc::None,
        responses: &[
            resp(202, "`Will reboot in N seconds`", Content::Text),
            resp(
                400,
                "`{\"error\": \"cannot reboot\"}` (e.g. a delay over an hour)",
                Content::TextOrError,
            ),
            UNAVAILABLE,
        ],
        handler: || post(v1::reboot),
    },
    Route {
        method: Method::Get,
        path: "/v2/config/vars/{var}",
        operation_id: "getConfigVar",
        summary: "A variable's value and the file it comes from (iohub/cmd/config/get); \
                  a secret's value is `{\"set\": bool}`",
        tag: "v2",
        public: false,
        body: BodyDoc::None,
        responses: &[
            resp(200, "`{\"var\", \"value\", \"source\"}`", Content::Json),
            resp(400, "Refused by the config service", Content::TextOrError),
            resp(404, "Unknown variable", Content::TextOrError),
            UNAVAILABLE,
        ],
        handler: || get(v2::get_var),
    },
    Route {
        method: Method::Post,
        path: "/v2/config/vars",
        operation_id: "setConfigVars",
        summary: "Set or remove variables (iohub/cmd/config/set): validated as a whole, \
                  written atomically into the owning files",
        tag: "v2",
        public: false,
        body: BodyDoc::SetVars,
        responses: &[
            resp(
                200,
                "`{\"written\": [files], \"generations\": {...}}`",
                Content::Json,
            ),
            resp(
                400,
                "Every problem found; nothing written",
                Content::TextOrError,
            ),
            resp(
                404,
                "A variable is unknown (every problem found; nothing written)",
                Content::TextOrError,
            ),
            UNAVAILABLE,
        ],
        handler: || post(v2::set_vars),
    },
    Route {
        method: Method::Get,
        path: "/v2/config/sections/{section}",
        operation_id: "getConfigSection",
        summary: "A config section as published, with its generation",
        tag: "v2",
        public: false,
        body: BodyDoc::None,
        responses: &[
            resp(200, "The section payload", Content::Json),
            resp(
                404,
                "Unknown or not yet valid section",
                Content::TextOrError,
            ),
            UNAVAILABLE,
        ],
        handler: || get(v2::get_section),
    },
    Route {
        method: Method::Get,
        path: "/v2/states",
        operation_id: "listStates",
        summary: "Every service state, by `service` or `service/item`",
        tag: "v2",
        public: false,
        body: BodyDoc::None,
        responses: &[resp(200, "Map of states", Content::Json)],
        handler: || get(v2::states),
    },
    Route {
        method: Method::Get,
        path: "/v2/states/{service}",
        operation_id: "getState",
        summary: "One service's state",
        tag: "v2",
        public: false,
        body: BodyDoc::None,
        responses: &[
            resp(200, "The state", Content::Json),
            resp(404, "Unknown service or no state yet", Content::TextOrError),
        ],
        handler: || get(v2::state),
    },
    Route {
        method: Method::Get,
        path: "/v2/states/{service}/{item}",
        operation_id: "getItemState",
        summary: "The state of one item of a service (e.g. one app)",
        tag: "v2",
        public: false,
        body: BodyDoc::None,
        responses: &[
            resp(200, "The state", Content::Json),
            resp(404, "Unknown service or no state yet", Content::TextOrError),
        ],
        handler: || get(v2::item_state),
    },
    Route {
        method: Method::Get,
        path: "/v2/events",
        operation_id: "streamEvents",
        summary: "Every bus event as server-sent events, each named after its kind with an \
                  `Event` as data; the first is `ready` (source `admin_api`, payload `{}`), \
                  sent once subscribed",
        tag: "v2",
        public: false,
        body: BodyDoc::None,
        responses: &[
            resp(200, "text/event-stream", Content::EventStream),
            resp(503, "Too many event streams", Content::TextOrError),
        ],
        handler: || get(v2::events),
    },
    Route {
        method: Method::Post,
        path: "/v2/deploy",
        operation_id: "uploadDeploy",
        summary: "Upload a deploy zip (raw body); stored under runtime/uploads/ and handed to \
                  the deployer",
        tag: "v2",
        public: false,
        body: BodyDoc::Zip,
        responses: &[
            resp(200, "The deployer's result", Content::Json),
            resp(
                400,
                "Not a zip, refused by the deployer, or refused whole under \
                 IOHUBOS_ADMIN_API_COMPOSE_POLICY=restricted (a zip's start.sh runs as root)",
                Content::TextOrError,
            ),
            UNAVAILABLE,
        ],
        handler: || post(v2::deploy),
    },
    Route {
        method: Method::Post,
        path: "/v2/registry/import",
        operation_id: "importRegistryArchives",
        summary:
            "Import the image archives of runtime/iohub-registry/ now (iohub/cmd/registry/reload)",
        tag: "v2",
        public: false,
        body: BodyDoc::None,
        responses: &[
            resp(200, "The registry's result", Content::Json),
            resp(400, "Refused", Content::TextOrError),
            UNAVAILABLE,
        ],
        handler: || post(v2::registry_import),
    },
    Route {
        method: Method::Get,
        path: "/openapi.json",
        operation_id: "openapi",
        summary: "This document (served without a token)",
        tag: "meta",
        public: true,
        body: BodyDoc::None,
        responses: &[resp(200, "OpenAPI 3 document", Content::Json)],
        handler: || get(|| async { Json(openapi::document()) }),
    },
];

/// The whole application: every route of [`ROUTES`], the original's 404s, the guard.
pub fn router(api: Api) -> Router {
    let mut by_path: BTreeMap<&str, MethodRouter<Api>> = BTreeMap::new();
    for r in ROUTES {
        let limit = r.body_limit();
        let handler = (r.handler)()
            .layer::<_, Infallible>(from_fn(move |req: Request, next: Next| {
                limit_body(limit, req, next)
            }))
            .layer(DefaultBodyLimit::max(limit));
        let merged = match by_path.remove(r.path) {
            Some(existing) => existing.merge(handler),
            None => handler,
        };
        by_path.insert(r.path, merged);
    }
    let mut router = Router::new();
    for (path, method_router) in by_path {
        router = router.route(path, method_router);
    }
    router
        .fallback(not_found)
        .layer(from_fn_with_state(api.clone(), guard))
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .with_state(api)
}
