//! The OpenAPI document of the admin API, generated from the handlers'
//! annotations and the typed bodies, served at `/api/v1/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The admin API's OpenAPI document, from the handlers and bodies it lists.
#[derive(OpenApi)]
#[openapi(
    info(title = "drover admin API", description = "Jobs, queues and the cluster. Send `Authorization: Bearer TOKEN` when the node has tokens."),
    paths(
        super::probes::health,
        super::ui::index,
        super::ui::file,
        super::ui::whoami,
        super::probes::ready,
        super::probes::metrics_text,
        document,
        super::cluster::stats,
        super::jobs::enqueue,
        super::jobs::get_job,
        super::jobs::list,
        super::jobs::timeline,
        super::jobs::by_key,
        super::dead::list,
        super::breakers::list,
        super::breakers::reset,
        super::dead::show,
        super::dead::replay_one,
        super::dead::replay_many,
        super::dead::purge,
        super::queues::clear_stuck,
        super::jobs::cancel,
        super::cluster::members,
        super::cluster::add_member,
        super::cluster::remove_member,
        super::cluster::transfer_leader,
        super::cluster::digest,
        super::cluster::snapshot,
        super::cluster::backups,
        super::cluster::audit,
        super::workers::list,
        super::cluster::policies,
        super::cluster::policies_diff,
        super::queues::list,
        super::queues::history,
        super::queues::why,
        super::queues::history_all,
        super::queues::purge,
        super::tenants::list,
        super::schedules::list,
        super::schedules::pause,
        super::schedules::resume,
        super::schedules::trigger,
        super::tenants::pause,
        super::tenants::drain,
        super::tenants::resume,
        super::tenants::erase,
        super::queues::pause,
        super::queues::pause_all,
        super::queues::drain,
        super::queues::drain_all,
        super::queues::resume,
        super::queues::resume_all,
        super::workers::shutdown_all,
        super::workers::shutdown_one,
        super::workers::release,
        super::versions::list,
        super::versions::disable,
        super::versions::enable,
        super::canary::status,
        super::canary::set,
        super::canary::promote,
        super::canary::abort,
        super::chaos::list,
        super::chaos::set,
        super::chaos::off,
        super::runs::list,
        super::runs::get_run,
        super::runs::budget,
        super::runs::timeline,
        super::runs::cancel,
        super::runs::replay,
        super::runs::costs,
        super::runs::override_run,
        super::runs::set_tenant_budgets,
    ),
    components(schemas(
        crate::api::types::ErrorBody,
        crate::api::types::ErrorInfo,
        crate::api::types::KeyLimitBody
    )),
    modifiers(&Bearer),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "probes", security(()),
    responses((status = 200, body = Object)))]
pub(super) async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
