"""The admin API tests (tenants, groups, agents, teams, rules, live actions, tokens) on a
real Redis Cluster (tests/cluster_helpers.py): the same test functions as
tests/test_admin_config.py, tests/test_admin_live.py and tests/test_admin_tokens.py, with
the ``api`` served over an engine on the cluster.
"""

from __future__ import annotations

import pytest
from admin_helpers import T0, Api
from cluster_helpers import (
    cluster_engine_override,
    cluster_redis_client,
    cluster_redis_url,
)
from test_admin_config import (  # noqa: F401  (collected here, on the cluster)
    test_a_body_and_its_version_are_read_together,
    test_agent_crud,
    test_agent_delete_refused_while_it_has_sessions,
    test_concurrent_creates_of_one_tenant,
    test_concurrent_rule_edits_lose_nothing,
    test_group_delete_refused_while_used,
    test_group_full_round_trip,
    test_group_list_paging,
    test_group_refusals_name_the_problem,
    test_if_match_versions,
    test_refused_changes_leave_no_trace,
    test_roles,
    test_rules_crud,
    test_service_hours_follow_the_zone_and_dst,
    test_team_crud,
    test_tenant_bad_body,
    test_tenant_create_get_update_delete,
    test_tenant_list_paging,
)
from test_admin_live import (  # noqa: F401  (collected here, on the cluster)
    test_agent_view_readiness_is_the_spec_formula,
    test_agents_created_over_http_take_customers,
    test_assign_over_capacity_is_forced_and_audited,
    test_assign_refusals,
    test_close_queued_and_assigned_sessions,
    test_concurrent_assigns_of_one_customer_one_wins,
    test_forced_offline_with_handover,
    test_group_timers_and_tenant_retention_apply,
    test_more_capacity_assigns_a_waiting_customer_at_once,
    test_new_overflow_tier_reevaluates_the_queue,
    test_queue_view_in_service_order,
    test_routing_rule_routes_an_arrival_by_attributes,
    test_session_view_with_full_history,
    test_tenant_summary_counts,
    test_transfer_to_group_and_to_agent,
)
from test_admin_tokens import (  # noqa: F401  (collected here, on the cluster)
    test_a_deleted_tenants_audit_log_is_archived,
    test_an_agent_bound_token_made_before_the_rule_is_refused,
    test_an_agent_bound_token_names_one_tenant_where_its_agent_exists,
    test_an_unexpected_error_is_logged_with_its_traceback,
    test_creating_a_tenant_takes_its_id_from_stale_tokens,
    test_deleting_a_tenant_takes_it_from_its_tokens,
    test_deleting_an_agent_revokes_the_tokens_bound_to_it,
    test_every_401_carries_its_challenge,
    test_last_use_is_listed_and_written_at_most_once_a_minute,
    test_options_answers_on_every_route,
    test_the_last_admin_token_for_all_tenants_stays,
    test_the_openapi_document_says_it,
    test_tokens_expire,
)

__all__ = ["cluster_engine_override", "cluster_redis_client", "cluster_redis_url"]


@pytest.fixture(autouse=True)
def _clock_at_t0(api: Api) -> None:
    """Each source module has an ``api`` (and clock) of its own; here one is shared."""
    api.clock.now = T0
