//! Delivery of alarms to a Prometheus Alertmanager (API v2). Being written.
#![allow(dead_code)]
