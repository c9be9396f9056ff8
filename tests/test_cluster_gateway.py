"""A representative part of the gateway end-to-end suite on a real Redis Cluster (3
masters + 3 replicas, tests/cluster_helpers.py): the same test functions as
tests/test_gateway_lifecycle.py and tests/test_gateway_replicas.py, run here with
``redis_client`` and ``engine`` on the cluster, so the consumer is the per-shard
:class:`~dispatchd.cluster_consumer.ClusterConsumer`.
"""

from __future__ import annotations

from cluster_helpers import (
    cluster_engine_override,
    cluster_redis_client,
    cluster_redis_url,
)
from test_gateway_lifecycle import (  # noqa: F401  (collected here, on the cluster)
    gw,
    test_agent_ready,
    test_arrive_assigned,
    test_arrive_errors,
    test_arrive_queued_with_position_and_eta,
    test_confirm_close_resolved_closes_and_frees_agent,
    test_customer_leave_while_queued_is_abandoned,
    test_duplicate_command_id_produces_events_once,
    test_msgpack_commands,
    test_restart_picks_up_where_the_old_consumer_stopped,
    test_set_agent_status_online_takes_waiting_customer,
    test_timer_queue_timeout_closes_as_system_closed,
    test_timer_silence_chain_in_due_order,
    test_transfer_to_group_keeps_wait_and_frees_old_agent,
)
from test_gateway_replicas import (  # noqa: F401
    replica,
    test_a_stalled_replica_renews_before_it_reads,
    test_entries_read_by_a_stalled_replica_are_taken_over,
    test_holder_killed_mid_stream_the_other_takes_over,
    test_replica_that_lost_its_lease_applies_nothing,
    test_two_replicas_under_load,
)

__all__ = ["cluster_engine_override", "cluster_redis_client", "cluster_redis_url"]


async def test_the_consumer_runs_per_shard(gw) -> None:  # noqa: F811
    from dispatchd.cluster_consumer import ClusterConsumer

    await gw.group("g")
    await gw.agent("a", ["g"])
    assert isinstance(gw.consumer, ClusterConsumer)
    [shard] = [s for s in gw.consumer.shards.values() if gw.tenant in s.tenants]
    slot = gw.redis.keyslot(f"{{{gw.tenant}}}")
    assert gw.redis.nodes_manager.get_node_from_slot(slot).name == shard.node
