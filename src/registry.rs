//! Every component kind Sidekick has, one line each. Adding a component means adding its
//! folder in its crate and one line here.

use sidekick_collector::component::Registry;
use sidekick_collector::extensions::{AuthExtension, HealthCheckConfig};
use sidekick_collector::storage::FileStorageConfig;
use sidekick_collector::transport::auth::{BasicAuthSettings, BearerTokenSettings};
use sidekick_exporters::{
    debug, otlp, otlp_http, prometheus as prometheus_exporter, prometheus_remote_write,
};
use sidekick_processors::{
    attributes, batch, filter, k8s_attributes, memory_limiter, probabilistic_sampler, resource,
    resourcedetection, transform,
};
use sidekick_receivers::filelog;
use sidekick_receivers::otlp as otlp_receiver;
use sidekick_receivers::prometheus;

pub fn registry() -> Registry {
    Registry::default()
        .receiver::<otlp_receiver::Config>("otlp")
        .receiver::<prometheus::Config>("prometheus")
        .receiver::<filelog::Config>("filelog")
        .processor::<batch::Config>("batch")
        .processor::<attributes::Config>("attributes")
        .processor::<resource::Config>("resource")
        .processor::<k8s_attributes::Config>("k8s_attributes")
        // The OpenTelemetry Collector's name for it.
        .processor::<k8s_attributes::Config>("k8sattributes")
        .processor::<memory_limiter::Config>("memory_limiter")
        .processor::<resourcedetection::Config>("resourcedetection")
        .processor::<filter::Config>("filter")
        .processor::<transform::Config>("transform")
        .processor::<probabilistic_sampler::Config>("probabilistic_sampler")
        .exporter::<otlp::Config>("otlp")
        // The OpenTelemetry Collector's newer names for the same exporters.
        .exporter::<otlp::Config>("otlp_grpc")
        .exporter::<otlp_http::Config>("otlphttp")
        .exporter::<otlp_http::Config>("otlp_http")
        .exporter::<debug::Config>("debug")
        .exporter::<prometheus_exporter::Config>("prometheus")
        .exporter::<prometheus_remote_write::Config>("prometheusremotewrite")
        .exporter::<prometheus_remote_write::Config>("prometheus_remote_write")
        .extension::<HealthCheckConfig>("health_check")
        .extension::<AuthExtension<BearerTokenSettings>>("bearertokenauth")
        .extension::<AuthExtension<BasicAuthSettings>>("basicauth")
        .extension::<FileStorageConfig>("file_storage")
}
