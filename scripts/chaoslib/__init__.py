"""The parts of ``scripts/chaos.py`` (the command line and what it does are described there).

* ``app_process`` -- ``xserve serve`` as a child process: start, kill -9, its Ray address;
* ``cluster`` -- the Ray connection to the app: find actors by their names, kill, call;
* ``parts`` -- the app under test as the faults reach it, and direct reads of its parts' state;
* ``load`` -- the load loop and the record of every request it sent;
* ``writes`` -- the ledger of acknowledged writes, and reading them back over HTTP;
* ``probes`` -- one round of the probe viewers' feeds;
* ``state`` -- the baseline snapshot and how a later read is compared with it;
* ``faults`` -- one class per fault, and ``FAULTS``, the faults by name;
* ``results`` -- what one fault measured, from the load's records;
* ``report`` -- the ``name value unit`` lines, the table, and progress lines;
* ``runner`` -- ``Chaos``: baseline, inject, recovery and state check of each fault under load.
"""
