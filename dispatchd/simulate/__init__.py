"""``dispatchd simulate``: a discrete-event what-if simulator of a contact centre.

It drives the real Lua routing engine with a virtual clock (every script takes
``now_ms``), so a day of a large centre runs in minutes, and compares it with baseline
policies run in pure Python on the very same customers. Modules:

* :mod:`~dispatchd.simulate.scenario`: the scenario file (groups, agent pools, demand);
* :mod:`~dispatchd.simulate.workload`: the customers (Poisson or a trace) and shifts;
* :mod:`~dispatchd.simulate.loop`: the event loop and the Lua router;
* :mod:`~dispatchd.simulate.baseline`: longest-idle and round-robin in Python;
* :mod:`~dispatchd.simulate.stats`, :mod:`~dispatchd.simulate.report`,
  :mod:`~dispatchd.simulate.plot`: the figures, the tables, the PNG;
* :mod:`~dispatchd.simulate.erlang`: Erlang C, to validate against;
* :mod:`~dispatchd.simulate.run`: the command itself.

The format of scenarios and traces is in ``docs/simulate.md``.
"""
