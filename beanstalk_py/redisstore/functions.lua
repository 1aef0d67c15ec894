#!lua name=bs
--[[
The Redis store's whole state machine: one Redis Function per beanstalk
command, loaded with FUNCTION LOAD REPLACE when a front end starts.  Every
key lives under the hash tag {bs}, so one slot holds the queue and each call
is atomic (declared key: the anchor '{bs}'; the others are built here, which
Redis allows within the declared slot).  This mirrors beanstalk_py/engine.py
step for step; where they could differ, the engine is the specification.

Every function takes ARGV[1] = now in microseconds, or '' for the server's
TIME (what front ends send: one clock for all of them, the primary's).  Tests
pass their own clock so that the in-memory engine and this library can be
driven through the same instants.  Each call first runs the timers already
due (delays, TTRs, pauses, waiter timeouts), one at a time in (when, seq)
order as the engine's tick does, at most MAX_TIMERS per call.

Layout ({bs}: prefix omitted; ids zero-padded to 20 digits as members, so
equal scores sort by member and lexicographic order is numeric order):
  id                 next job id (INCR: ids are in commit order across front ends)
  epoch, replid      stats id, and the primary's replication id it was made under (bs_init)
  j:<id>             the job: a msgpack array (fields J_* below)
  t:<tube>           hash: urgent reserved total deletes pauses pause unpause_at ptimer using watching
  r:<tube>           zset ready:   score pri, member id -> (pri, id) order, also across tubes
  d:<tube>           zset delayed: score deadline, member id -> (deadline, id)
  b:<tube>           zset buried:  score bury seq, member id -> bury order
  w:<tube>           zset waiters: score wait seq, member owner -> oldest waiter first
  tubes              zset tube -> list position (the engine's swap-remove list order)
  timers             zset score when, member <seq><kind><arg>: every timer, in (when, seq) order
  o:<owner>          zset of the jobs an owner (client session) holds, by TTR deadline
  wr:<owner>         msgpack {wait seq, front end, timeout timer, soon timer, tubes...}
  in:<fe>            list of deliveries to a front end: '<owner> <outcome>' or '<owner> job <id> <body>'
  pid:<owner>        an id taken at a put header whose body has not come yet
  c                  hash: server-wide job and command counters
  fes                zset front end -> lease expiry (us): the live front ends
  fr:<fe>            zset of the jobs a front end's sessions hold, by reserve seq
  fw:<fe>            set of a front end's sessions waiting in a reserve
  tr:<fe>            hash '<using|watching> <tube>' -> that front end's sessions' count
  dead:<fe>          a front end whose lease ran out: its calls are refused

Front-end leases: a front end renews its lease (bs_lease) every second; one
that stops (SIGKILL, crash, a pause longer than the lease) is reclaimed by
the first lease renewal or tick after its expiry, of any front end: its waiters
are dropped, then its sessions' reserved jobs go back to ready in reserve
order (as a closed connection's: no timeout or release is counted, the
reserve was), then its sessions' use/watch counts are let go, then its inbox
is deleted.  Owners are '<fe>:<n>', so the
front end of a session is its key up to the last ':'.
]]

local P = '{bs}:'
local K_ID, K_TIMERS, K_TSEQ, K_TUBES, K_C = P .. 'id', P .. 'timers', P .. 'tseq', P .. 'tubes', P .. 'c'
local K_BSEQ, K_RSEQ, K_WSEQ = P .. 'bseq', P .. 'rseq', P .. 'wseq'
local K_EPOCH, K_REPLID = P .. 'epoch', P .. 'replid'
-- Ids skipped after the primary changed (bs_init): more than a front end
-- can hand out in the seconds of a failover (~100k puts/s at most here).
local ID_JUMP = 10000000

-- A call runs at most this many due timers first; the rest wait for the next
-- call (a tick comes at least every few ms while anything is due).  A bound,
-- not a measured optimum: it keeps one call under ~1 ms of Redis time.
local MAX_TIMERS = 1000
-- A call reclaims at most this many waiters plus jobs of expired front ends
-- (a bound like MAX_TIMERS: ~10 Redis ops each, well under 1 ms per call);
-- the rest goes with the next call (a lease renewal comes every second).
local MAX_RECLAIM = 100
-- A reclaimed front end's calls are refused for this long (ms): far longer
-- than a pause it could wake from with calls still queued (its next lease
-- renewal, within a second, tells it to exit); ids are random per process.
local DEAD_MS = 86400000
local K_FES = P .. 'fes'
local URGENT = 1024
local US = 1000000
local SAFETY = US -- DEADLINE_SOON this long before a TTR ends (engine.SAFETY_MARGIN)

-- Job record fields.
local J_TUBE, J_PRI, J_DELAY, J_TTR, J_CREATED, J_STATE, J_OWNER, J_DEADLINE, J_TIMER = 1, 2, 3, 4, 5, 6, 7, 8, 9
local J_RESERVES, J_TIMEOUTS, J_RELEASES, J_BURIES, J_KICKS, J_BODY, J_BSEQ, J_RSEQ = 10, 11, 12, 13, 14, 15, 16, 17

-- redis.call and cmsgpack are reachable only while a function runs, not at load.
local function pack(t) return cmsgpack.pack(t) end
local function unpack(s) return cmsgpack.unpack(s) end

local function pad(n) return string.format('%020d', n) end
local function num(x) return tonumber(x) or 0 end

-- The front end a session belongs to: its key '<fe>:<n>' up to the last ':'.
local function fe_of(owner) return owner:match('^(.*):[^:]*$') or owner end
local function is_dead(fe) return redis.call('EXISTS', P .. 'dead:' .. fe) == 1 end
-- What a call of a reclaimed front end gets instead of an answer: its
-- sessions' jobs and waits are gone, it must not make new ones.
local function lease_lost(fe)
  return redis.error_reply('LEASELOST front end ' .. fe .. ' lost its lease: its state was reclaimed')
end

local function clock(arg)
  if arg ~= nil and arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * US + tonumber(t[2])
end

-- ------------------------------------------------------------------ jobs

local function job_get(id)
  local s = redis.call('GET', P .. 'j:' .. id)
  if not s then return nil end
  return unpack(s)
end

local function job_set(id, j) redis.call('SET', P .. 'j:' .. id, pack(j)) end

-- ------------------------------------------------------------------ timers

local function add_timer(when, kind, arg)
  local m = pad(redis.call('INCR', K_TSEQ)) .. kind .. arg
  redis.call('ZADD', K_TIMERS, when, m)
  return m
end

local function del_timer(m)
  if m and m ~= '' then redis.call('ZREM', K_TIMERS, m) end
end

-- ------------------------------------------------------------------ tubes

local function tube_exists(name) return redis.call('ZSCORE', K_TUBES, name) ~= false end

local function tube_make(name)
  if not tube_exists(name) then redis.call('ZADD', K_TUBES, redis.call('ZCARD', K_TUBES), name) end
end

local function paused(name) return num(redis.call('HGET', P .. 't:' .. name, 'pause')) ~= 0 end

-- Drop a tube nothing refers to (its counters go with it), moving the last
-- tube of the list into its place, as the engine's SwapList does.
local function maybe_free(name)
  if name == 'default' then return end
  local tkey = P .. 't:' .. name
  local f = redis.call('HMGET', tkey, 'using', 'watching', 'reserved', 'ptimer')
  if num(f[1]) > 0 or num(f[2]) > 0 or num(f[3]) > 0 then return end
  if redis.call('ZCARD', P .. 'r:' .. name) > 0 or redis.call('ZCARD', P .. 'd:' .. name) > 0
      or redis.call('ZCARD', P .. 'b:' .. name) > 0 then
    return
  end
  local pos = redis.call('ZSCORE', K_TUBES, name)
  if not pos then return end
  local last = redis.call('ZRANGE', K_TUBES, -1, -1)[1]
  if last ~= name then redis.call('ZADD', K_TUBES, pos, last) end
  redis.call('ZREM', K_TUBES, name)
  del_timer(f[4])
  redis.call('DEL', tkey)
end

-- ------------------------------------------------------------------ queues

local function make_ready(id, j)
  local tube = j[J_TUBE]
  j[J_STATE] = 'ready'
  j[J_OWNER] = ''
  redis.call('ZADD', P .. 'r:' .. tube, j[J_PRI], pad(id))
  redis.call('HINCRBY', K_C, 'ready', 1)
  if j[J_PRI] < URGENT then
    redis.call('HINCRBY', K_C, 'urgent', 1)
    redis.call('HINCRBY', P .. 't:' .. tube, 'urgent', 1)
  end
end

local function remove_ready(id, j)
  local tube = j[J_TUBE]
  redis.call('ZREM', P .. 'r:' .. tube, pad(id))
  redis.call('HINCRBY', K_C, 'ready', -1)
  if j[J_PRI] < URGENT then
    redis.call('HINCRBY', K_C, 'urgent', -1)
    redis.call('HINCRBY', P .. 't:' .. tube, 'urgent', -1)
  end
end

local function make_delayed(id, j, now)
  j[J_STATE] = 'delayed'
  j[J_DEADLINE] = now + j[J_DELAY] * US
  redis.call('ZADD', P .. 'd:' .. j[J_TUBE], j[J_DEADLINE], pad(id))
  j[J_TIMER] = add_timer(j[J_DEADLINE], 'd', id)
  redis.call('HINCRBY', K_C, 'delayed', 1)
end

local function remove_delayed(id, j)
  redis.call('ZREM', P .. 'd:' .. j[J_TUBE], pad(id))
  del_timer(j[J_TIMER])
  j[J_TIMER] = ''
  redis.call('HINCRBY', K_C, 'delayed', -1)
end

local function make_buried(id, j)
  j[J_STATE] = 'buried'
  j[J_OWNER] = ''
  j[J_BSEQ] = redis.call('INCR', K_BSEQ)
  redis.call('ZADD', P .. 'b:' .. j[J_TUBE], j[J_BSEQ], pad(id))
  redis.call('HINCRBY', K_C, 'buried', 1)
end

local function remove_buried(id, j)
  redis.call('ZREM', P .. 'b:' .. j[J_TUBE], pad(id))
  redis.call('HINCRBY', K_C, 'buried', -1)
end

local function reserve(id, j, owner, now)
  j[J_STATE] = 'reserved'
  j[J_OWNER] = owner
  j[J_RESERVES] = j[J_RESERVES] + 1
  j[J_DEADLINE] = now + j[J_TTR] * US
  j[J_RSEQ] = redis.call('INCR', K_RSEQ) -- a connection's reserve order: close gives jobs back in it
  j[J_TIMER] = add_timer(j[J_DEADLINE], 't', id)
  redis.call('HINCRBY', P .. 't:' .. j[J_TUBE], 'reserved', 1)
  redis.call('HINCRBY', K_C, 'reserved', 1)
  redis.call('ZADD', P .. 'o:' .. owner, j[J_DEADLINE], pad(id))
  redis.call('ZADD', P .. 'fr:' .. fe_of(owner), j[J_RSEQ], pad(id)) -- the lease's reclaim index
end

local function unreserve(id, j)
  redis.call('ZREM', P .. 'o:' .. j[J_OWNER], pad(id))
  redis.call('ZREM', P .. 'fr:' .. fe_of(j[J_OWNER]), pad(id))
  redis.call('HINCRBY', P .. 't:' .. j[J_TUBE], 'reserved', -1)
  redis.call('HINCRBY', K_C, 'reserved', -1)
  del_timer(j[J_TIMER])
  j[J_TIMER] = ''
  j[J_OWNER] = ''
end

-- Take a ready, buried or delayed job out of its queue.
local function unqueue(id, j)
  local state = j[J_STATE]
  if state == 'ready' then remove_ready(id, j)
  elseif state == 'buried' then remove_buried(id, j)
  else remove_delayed(id, j) end
end

-- ------------------------------------------------------------------ waiting

local function deadline_soon(owner, now)
  local r = redis.call('ZRANGE', P .. 'o:' .. owner, 0, 0, 'WITHSCORES')
  if #r == 0 then return false end
  return now >= tonumber(r[2]) - SAFETY
end

local function waiter_get(owner)
  local s = redis.call('GET', P .. 'wr:' .. owner)
  if not s then return nil end
  return unpack(s)
end

-- A waiter's DEADLINE_SOON timer: the soonest TTR of its jobs, less the margin.
local function schedule_soon(owner, w)
  del_timer(w[4])
  w[4] = ''
  local r = redis.call('ZRANGE', P .. 'o:' .. owner, 0, 0, 'WITHSCORES')
  if #r > 0 then w[4] = add_timer(tonumber(r[2]) - SAFETY, 's', owner) end
end

local function stop_waiting(owner)
  local w = waiter_get(owner)
  if w == nil then return nil end
  for i = 5, #w do redis.call('ZREM', P .. 'w:' .. w[i], owner) end
  del_timer(w[3])
  del_timer(w[4])
  redis.call('DEL', P .. 'wr:' .. owner)
  redis.call('SREM', P .. 'fw:' .. w[2], owner)
  return w
end

local function deliver(fe, item) redis.call('RPUSH', P .. 'in:' .. fe, item) end

-- Hand ready jobs of a tube to its waiters, oldest waiter first.
local function dispatch(tube, now)
  local wkey, rkey = P .. 'w:' .. tube, P .. 'r:' .. tube
  while not paused(tube) do
    local owner = redis.call('ZRANGE', wkey, 0, 0)[1]
    if not owner then return end
    local head = redis.call('ZRANGE', rkey, 0, 0)[1]
    if not head then return end
    local w = stop_waiting(owner)
    -- A waiter of a front end whose lease ran out but is not reclaimed yet
    -- (MAX_RECLAIM per call) is dropped, not served: nobody would answer it.
    if not is_dead(w[2]) then
      local id = tonumber(head)
      local j = job_get(id)
      remove_ready(id, j)
      reserve(id, j, owner, now)
      job_set(id, j)
      deliver(w[2], owner .. ' job ' .. string.format('%d', id) .. ' ' .. j[J_BODY])
    end
  end
end

-- ------------------------------------------------------------------ timers due

local function delay_ends(id, now)
  local j = job_get(id)
  if j == nil or j[J_STATE] ~= 'delayed' then return end
  j[J_TIMER] = ''
  remove_delayed(id, j)
  make_ready(id, j)
  job_set(id, j)
  dispatch(j[J_TUBE], now)
end

local function ttr_ends(id, now)
  local j = job_get(id)
  if j == nil or j[J_STATE] ~= 'reserved' then return end
  local owner = j[J_OWNER]
  j[J_TIMER] = ''
  unreserve(id, j)
  j[J_TIMEOUTS] = j[J_TIMEOUTS] + 1
  redis.call('HINCRBY', K_C, 'timeouts', 1)
  make_ready(id, j)
  job_set(id, j)
  local w = waiter_get(owner)
  if w ~= nil then
    schedule_soon(owner, w)
    redis.call('SET', P .. 'wr:' .. owner, pack(w))
  end
  dispatch(j[J_TUBE], now)
end

local function unpause(tube, now)
  redis.call('HSET', P .. 't:' .. tube, 'pause', 0, 'ptimer', '')
  dispatch(tube, now)
end

local function wait_ends(owner, now, kind)
  local soon = kind == 's' or deadline_soon(owner, now)
  local w = stop_waiting(owner)
  if w ~= nil then deliver(w[2], owner .. (soon and ' DEADLINE_SOON' or ' TIMED_OUT')) end
end

-- ------------------------------------------------------------------ leases

-- Reclaim what front ends whose lease ran out still hold, at most MAX_RECLAIM
-- waiters plus jobs per call.  Waiters go first, so that the jobs given back
-- are never handed to a waiter of the same dead front end.
local function reclaim(now)
  local budget = MAX_RECLAIM
  while budget > 0 do
    local fe = redis.call('ZRANGEBYSCORE', K_FES, '-inf', string.format('%d', now), 'LIMIT', 0, 1)[1]
    if not fe then return end
    -- From now on its calls are refused (a paused front end waking up).
    redis.call('SET', P .. 'dead:' .. fe, 1, 'PX', DEAD_MS)
    local waiters = redis.call('SRANDMEMBER', P .. 'fw:' .. fe, budget)
    for i = 1, #waiters do
      stop_waiting(waiters[i]) -- also its timers and its fw: entry
      redis.call('SREM', P .. 'fw:' .. fe, waiters[i]) -- in case it had no record: never loop
    end
    budget = budget - #waiters
    if budget <= 0 then return end
    -- Its jobs in reserve order (the index is scored by reserve seq).
    local held = redis.call('ZRANGE', P .. 'fr:' .. fe, 0, budget - 1)
    for i = 1, #held do
      local id = tonumber(held[i])
      local j = job_get(id)
      if j ~= nil and j[J_STATE] == 'reserved' and fe_of(j[J_OWNER]) == fe then
        unreserve(id, j)
        make_ready(id, j)
        job_set(id, j)
        dispatch(j[J_TUBE], now)
      else
        redis.call('ZREM', P .. 'fr:' .. fe, held[i]) -- stale: cannot happen, but never loop on it
      end
    end
    budget = budget - #held
    if budget <= 0 then return end -- the next call goes on from here
    -- Its sessions' tube counts (use/watch), as their closes would have.
    local refs = redis.call('HRANDFIELD', P .. 'tr:' .. fe, budget, 'WITHVALUES')
    for i = 1, #refs, 2 do
      local field, tube = refs[i]:match('^(%S+) (.*)$')
      redis.call('HINCRBY', P .. 't:' .. tube, field, -tonumber(refs[i + 1]))
      redis.call('HDEL', P .. 'tr:' .. fe, refs[i])
      maybe_free(tube)
    end
    budget = budget - #refs / 2
    if budget <= 0 and redis.call('EXISTS', P .. 'tr:' .. fe) == 1 then return end
    -- All given back: its deliveries were to its own waiters, whose jobs
    -- came back above.  What its sessions held in o:<owner> is empty now.
    redis.call('DEL', P .. 'in:' .. fe, P .. 'fr:' .. fe, P .. 'fw:' .. fe, P .. 'tr:' .. fe)
    redis.call('ZREM', K_FES, fe)
  end
end

local function run_timers(now)
  for _ = 1, MAX_TIMERS do
    local m = redis.call('ZRANGEBYSCORE', K_TIMERS, '-inf', now, 'LIMIT', 0, 1)[1]
    if not m then return end
    redis.call('ZREM', K_TIMERS, m)
    local kind, arg = m:sub(21, 21), m:sub(22)
    if kind == 'd' then delay_ends(tonumber(arg), now)
    elseif kind == 't' then ttr_ends(tonumber(arg), now)
    elseif kind == 'u' then unpause(arg, now)
    else wait_ends(arg, now, kind) end
  end
end

-- ------------------------------------------------------------------ commands

local function job_reply(id, j) return {id, j[J_BODY]} end

-- bs_init(now) -> epoch: the default tube exists from the start; the epoch
-- (what `stats` shows as id) follows the primary's replication id.  A new
-- one means a failover or a restart, which may have lost the last writes,
-- the id counter's among them: then the epoch changes and the counter jumps
-- by ID_JUMP, so that no id is handed out twice within one epoch (ids and
-- stats id together stay unique, as the protocol document asks of clients
-- who pair them).  Every front end calls this on each (re)connection; the
-- first after the change rotates, the others find the new replication id.
local function init(now, a)
  tube_make('default')
  local replid = string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)') or ''
  local seen, epoch = redis.call('GET', K_REPLID), redis.call('GET', K_EPOCH)
  if seen ~= replid or not epoch then
    if seen then redis.call('INCRBY', K_ID, ID_JUMP) end
    epoch = string.sub(redis.sha1hex(replid .. ':' .. now .. ':' .. tostring(epoch)), 1, 16)
    redis.call('SET', K_EPOCH, epoch)
    redis.call('SET', K_REPLID, replid)
  end
  return epoch
end

-- bs_take_id(now, owner): use up one id (a put header was read).  With an
-- owner, the put that follows takes it from pid:<owner>.
local function take_id(now, a)
  local id = redis.call('INCR', K_ID)
  if a[2] ~= '' then redis.call('SET', P .. 'pid:' .. a[2], id, 'PX', 600000) end
  return id
end

-- bs_put(now, tube, pri, delay, ttr, body, owner-with-taken-id or '') -> id
local function put(now, a)
  local tube, pri, delay, ttr, body, taken = a[2], tonumber(a[3]), tonumber(a[4]), tonumber(a[5]), a[6], a[7]
  -- Checked before any write: Redis does not undo a script's writes on error.
  if not (pri and delay and ttr and body and taken) then return redis.error_reply('ERR bad put arguments') end
  local id
  if taken ~= '' then
    id = tonumber(redis.call('GET', P .. 'pid:' .. taken))
    redis.call('DEL', P .. 'pid:' .. taken)
  end
  if id == nil then id = redis.call('INCR', K_ID) end
  tube_make(tube)
  if ttr < 1 then ttr = 1 end
  local j = {tube, pri, delay, ttr, now, 'ready', '', 0, '', 0, 0, 0, 0, 0, body, 0, 0}
  redis.call('HINCRBY', P .. 't:' .. tube, 'total', 1)
  redis.call('HINCRBY', K_C, 'total', 1)
  if delay > 0 then
    make_delayed(id, j, now)
    job_set(id, j)
  else
    make_ready(id, j)
    job_set(id, j)
    dispatch(tube, now)
  end
  return id
end

-- bs_reserve(now, owner, fe, timeout, tubes...) -> {id, body} | 'TIMED_OUT'
-- | 'DEADLINE_SOON' | 'WAIT' (registered as a waiter; the outcome comes
-- through in:<fe>).  timeout < 0: wait for ever.
local function reserve_cmd(now, a)
  local owner, fe, timeout = a[2], a[3], tonumber(a[4])
  if is_dead(fe) then return lease_lost(fe) end
  local soon = deadline_soon(owner, now)
  if soon then
    local any = false
    for i = 5, #a do
      if redis.call('ZCARD', P .. 'r:' .. a[i]) > 0 then any = true break end
    end
    if not any then return 'DEADLINE_SOON' end
  end
  local best_tube, best_pri, best_id
  for i = 5, #a do
    local tube = a[i]
    if not paused(tube) then
      local r = redis.call('ZRANGE', P .. 'r:' .. tube, 0, 0, 'WITHSCORES')
      if #r > 0 then
        local pri = tonumber(r[2])
        if best_tube == nil or pri < best_pri or (pri == best_pri and r[1] < best_id) then
          best_tube, best_pri, best_id = tube, pri, r[1]
        end
      end
    end
  end
  if best_tube ~= nil then
    local id = tonumber(best_id)
    local j = job_get(id)
    remove_ready(id, j)
    reserve(id, j, owner, now)
    job_set(id, j)
    return job_reply(id, j)
  end
  if timeout == 0 then return soon and 'DEADLINE_SOON' or 'TIMED_OUT' end
  local seq = redis.call('INCR', K_WSEQ)
  local w = {seq, fe, '', ''}
  for i = 5, #a do
    w[#w + 1] = a[i]
    redis.call('ZADD', P .. 'w:' .. a[i], seq, owner)
  end
  redis.call('SADD', P .. 'fw:' .. fe, owner) -- the lease's reclaim index
  if timeout > 0 then w[3] = add_timer(now + timeout * US, 'w', owner) end
  schedule_soon(owner, w)
  redis.call('SET', P .. 'wr:' .. owner, pack(w))
  return 'WAIT'
end

-- bs_unwait(now, owner) -> 1 if it was still waiting, 0 if its outcome is
-- already on its way (in the front end's inbox).
local function unwait(now, a)
  if stop_waiting(a[2]) == nil then return 0 end
  return 1
end

local function own_reserved(owner, id)
  local j = job_get(id)
  if j ~= nil and j[J_STATE] == 'reserved' and j[J_OWNER] == owner then return j end
  return nil
end

-- bs_reserve_job(now, owner, id) -> {id, body} | nil
local function reserve_job(now, a)
  local owner, id = a[2], tonumber(a[3])
  if is_dead(fe_of(owner)) then return lease_lost(fe_of(owner)) end
  local j = job_get(id)
  if j == nil or j[J_STATE] == 'reserved' then return false end
  unqueue(id, j)
  reserve(id, j, owner, now)
  job_set(id, j)
  return job_reply(id, j)
end

-- bs_delete(now, owner, id) -> 1 | 0.  owner '': an operator's delete,
-- never of a reserved job.
local function delete(now, a)
  local owner, id = a[2], tonumber(a[3])
  local j = job_get(id)
  if j == nil then return 0 end
  if j[J_STATE] == 'reserved' then
    if j[J_OWNER] ~= owner then return 0 end
    unreserve(id, j)
  else
    unqueue(id, j)
  end
  redis.call('HINCRBY', P .. 't:' .. j[J_TUBE], 'deletes', 1)
  redis.call('DEL', P .. 'j:' .. id)
  maybe_free(j[J_TUBE])
  return 1
end

-- bs_release(now, owner, id, pri, delay) -> 1 | 0
local function release(now, a)
  local owner, id, pri, delay = a[2], tonumber(a[3]), tonumber(a[4]), tonumber(a[5])
  local j = own_reserved(owner, id)
  if j == nil then return 0 end
  j[J_RELEASES] = j[J_RELEASES] + 1
  unreserve(id, j)
  j[J_PRI] = pri
  j[J_DELAY] = delay
  if delay > 0 then
    make_delayed(id, j, now)
    job_set(id, j)
  else
    make_ready(id, j)
    job_set(id, j)
    dispatch(j[J_TUBE], now)
  end
  return 1
end

-- bs_bury(now, owner, id, pri) -> 1 | 0
local function bury(now, a)
  local owner, id, pri = a[2], tonumber(a[3]), tonumber(a[4])
  local j = own_reserved(owner, id)
  if j == nil then return 0 end
  j[J_BURIES] = j[J_BURIES] + 1
  unreserve(id, j)
  j[J_PRI] = pri
  make_buried(id, j)
  job_set(id, j)
  return 1
end

-- bs_touch(now, owner, id) -> 1 | 0
local function touch(now, a)
  local owner, id = a[2], tonumber(a[3])
  local j = own_reserved(owner, id)
  if j == nil then return 0 end
  j[J_DEADLINE] = now + j[J_TTR] * US
  del_timer(j[J_TIMER])
  j[J_TIMER] = add_timer(j[J_DEADLINE], 't', id)
  redis.call('ZADD', P .. 'o:' .. owner, j[J_DEADLINE], pad(id))
  job_set(id, j)
  return 1
end

local function kick_one(id, j, now)
  j[J_KICKS] = j[J_KICKS] + 1
  unqueue(id, j)
  make_ready(id, j)
  job_set(id, j)
  -- Each kicked job goes to waiters at once, as 1.12's enqueue_job does.
  dispatch(j[J_TUBE], now)
end

-- bs_kick(now, tube, bound) -> kicked: buried jobs, or if none, delayed ones.
local function kick(now, a)
  local tube, bound = a[2], tonumber(a[3])
  if not tube_exists(tube) then return 0 end
  local q = P .. 'b:' .. tube
  if redis.call('ZCARD', q) == 0 then q = P .. 'd:' .. tube end
  local kicked = 0
  while kicked < bound do
    local head = redis.call('ZRANGE', q, 0, 0)[1]
    if not head then break end
    local id = tonumber(head)
    kick_one(id, job_get(id), now)
    kicked = kicked + 1
  end
  return kicked
end

-- bs_kick_job(now, id) -> 1 | 0
local function kick_job(now, a)
  local id = tonumber(a[2])
  local j = job_get(id)
  if j == nil or (j[J_STATE] ~= 'buried' and j[J_STATE] ~= 'delayed') then return 0 end
  kick_one(id, j, now)
  return 1
end

-- bs_peek(now, id) -> {id, body} | nil
local function peek(now, a)
  local id = tonumber(a[2])
  local j = job_get(id)
  if j == nil then return false end
  return job_reply(id, j)
end

local QUEUE = {ready = 'r:', delayed = 'd:', buried = 'b:'}

-- bs_peek_tube(now, tube, state) -> {id, body} | nil
local function peek_tube(now, a)
  local head = redis.call('ZRANGE', P .. QUEUE[a[3]] .. a[2], 0, 0)[1]
  if not head then return false end
  local id = tonumber(head)
  return job_reply(id, job_get(id))
end

-- bs_pause(now, tube, seconds) -> 1 | 0
local function pause(now, a)
  local tube, delay = a[2], tonumber(a[3])
  if not tube_exists(tube) then return 0 end
  local tkey = P .. 't:' .. tube
  redis.call('HINCRBY', tkey, 'pauses', 1)
  del_timer(redis.call('HGET', tkey, 'ptimer'))
  if delay == 0 then
    -- As the engine: a zero pause ends at once and wakes the waiters.
    redis.call('HSET', tkey, 'pause', 0, 'unpause_at', now, 'ptimer', '')
    dispatch(tube, now)
    return 1
  end
  local at = now + delay * US
  redis.call('HSET', tkey, 'pause', delay * US, 'unpause_at', at, 'ptimer', add_timer(at, 'u', tube))
  return 1
end

-- A front end's share of a tube's use/watch count, which a reclaim takes
-- back (an entry at 0 is dropped: the hash holds only live counts).
local function fe_ref(fe, tube, field, delta)
  local k, f = P .. 'tr:' .. fe, field .. ' ' .. tube
  if redis.call('HINCRBY', k, f, delta) == 0 then redis.call('HDEL', k, f) end
end

-- bs_ref(now, fe, tube, field, delta, ...): use/watch counts of tubes, from
-- the sessions of front end fe (written behind: the front end answers
-- use/watch/ignore itself).  A positive delta makes the tube; a negative one
-- may free it.
local function ref(now, a)
  local fe = a[2]
  if is_dead(fe) then return lease_lost(fe) end
  for i = 3, #a, 3 do
    local tube, field, delta = a[i], a[i + 1], tonumber(a[i + 2])
    if delta > 0 then tube_make(tube) end
    redis.call('HINCRBY', P .. 't:' .. tube, field, delta)
    fe_ref(fe, tube, field, delta)
    if delta < 0 then maybe_free(tube) end
  end
  return 1
end

-- bs_close(now, owner, use, watched...): a client went away.  Its jobs go
-- back in reserve order, each offered to waiters; then its tubes are let go.
local function close(now, a)
  local owner = a[2]
  -- Reclaimed already: its jobs, waits and tube counts.
  if is_dead(fe_of(owner)) then return lease_lost(fe_of(owner)) end
  stop_waiting(owner)
  local held = redis.call('ZRANGE', P .. 'o:' .. owner, 0, -1)
  local jobs = {}
  for i = 1, #held do
    local id = tonumber(held[i])
    jobs[i] = {id, job_get(id)}
  end
  table.sort(jobs, function(x, y) return x[2][J_RSEQ] < y[2][J_RSEQ] end)
  for i = 1, #jobs do
    local id, j = jobs[i][1], jobs[i][2]
    unreserve(id, j)
    make_ready(id, j)
    job_set(id, j)
    dispatch(j[J_TUBE], now)
  end
  local fe = fe_of(owner)
  for i = 4, #a do
    redis.call('HINCRBY', P .. 't:' .. a[i], 'watching', -1)
    fe_ref(fe, a[i], 'watching', -1)
    maybe_free(a[i])
  end
  redis.call('HINCRBY', P .. 't:' .. a[3], 'using', -1)
  fe_ref(fe, a[3], 'using', -1)
  maybe_free(a[3])
  return 1
end

-- bs_stats_job(now, id) -> nil | {id, tube, state, pri, created, delay, ttr,
-- deadline, reserves, timeouts, releases, buries, kicks, now}
local function stats_job(now, a)
  local id = tonumber(a[2])
  local j = job_get(id)
  if j == nil then return false end
  return {id, j[J_TUBE], j[J_STATE], j[J_PRI], j[J_CREATED], j[J_DELAY], j[J_TTR], j[J_DEADLINE],
          j[J_RESERVES], j[J_TIMEOUTS], j[J_RELEASES], j[J_BURIES], j[J_KICKS], now}
end

-- bs_stats_tube(now, tube) -> nil | {urgent, ready, reserved, delayed, buried,
-- total, using, watching, waiting, deletes, pauses, pause, unpause_at, now}
local function stats_tube(now, a)
  local tube = a[2]
  if not tube_exists(tube) then return false end
  local f = redis.call('HMGET', P .. 't:' .. tube, 'urgent', 'reserved', 'total', 'using', 'watching',
                 'deletes', 'pauses', 'pause', 'unpause_at')
  return {num(f[1]), redis.call('ZCARD', P .. 'r:' .. tube), num(f[2]), redis.call('ZCARD', P .. 'd:' .. tube),
          redis.call('ZCARD', P .. 'b:' .. tube), num(f[3]), num(f[4]), num(f[5]),
          redis.call('ZCARD', P .. 'w:' .. tube), num(f[6]), num(f[7]), num(f[8]), num(f[9]), now}
end

-- bs_stats(now, name, delta, ...) -> {current-tubes, field, value, ...}: the
-- front end's unsent command counts are added first.
local function stats(now, a)
  for i = 2, #a, 2 do redis.call('HINCRBY', K_C, a[i], a[i + 1]) end
  local out = {redis.call('ZCARD', K_TUBES), redis.call('GET', K_EPOCH) or ''}
  local all = redis.call('HGETALL', K_C)
  for i = 1, #all do out[#out + 1] = all[i] end
  return out
end

-- bs_count(now, name, delta, ...): command counts, written behind.
local function count(now, a)
  for i = 2, #a, 2 do redis.call('HINCRBY', K_C, a[i], a[i + 1]) end
  return 1
end

-- bs_list_tubes(now) -> names in list order
local function list_tubes(now, a) return redis.call('ZRANGE', K_TUBES, 0, -1) end

-- bs_tick(now) -> {now, next timer's time or -1}
local function tick(now, a)
  local r = redis.call('ZRANGE', K_TIMERS, 0, 0, 'WITHSCORES')
  return {now, #r > 0 and tonumber(r[2]) or -1}
end

-- bs_lease(now, fe, ttl us, first) -> 1: held until just before now + ttl; 0: lost (it
-- ran out, so it was reclaimed by this very call if not before).  first=1
-- takes a new lease (a front end starting); 0 only renews a held one, never
-- revives a lost one.
local function lease(now, a)
  local fe, ttl, first = a[2], tonumber(a[3]), a[4] == '1'
  if is_dead(fe) or (not first and redis.call('ZSCORE', K_FES, fe) == false) then return 0 end
  redis.call('ZADD', K_FES, now + ttl, fe)
  return 1
end

-- (A plain loop: pairs() is not reachable while the library loads.)
local COMMANDS = {
  'init', init, 'take_id', take_id, 'put', put, 'reserve', reserve_cmd, 'unwait', unwait,
  'reserve_job', reserve_job, 'delete', delete, 'release', release, 'bury', bury, 'touch', touch,
  'kick', kick, 'kick_job', kick_job, 'peek', peek, 'peek_tube', peek_tube, 'pause', pause,
  'ref', ref, 'close', close, 'stats_job', stats_job, 'stats_tube', stats_tube, 'stats', stats,
  'count', count, 'list_tubes', list_tubes, 'tick', tick, 'lease', lease,
}

-- Which calls look for expired leases: the periodic ones, not the commands.
-- Every front end renews each LEASE_RENEW_S (1 s) and one with a waiter
-- ticks every 20 ms, so a reclaim comes at most ~1 s after the expiry.  In
-- every command the look-up cost 4 us of Redis CPU per put+reserve+delete
-- (measured batched on the 2-core machine: 38.8 us without leases, 41.9 with
-- them, 45.8 with the look-up in every call).  What a dead front end got
-- meanwhile (a job handed to its waiter) is in its index and comes back.
local RECLAIMS = {lease = true, tick = true}

local function register(name, fn)
  redis.register_function('bs_' .. name, function(keys, args)
    local now = clock(args[1])
    if RECLAIMS[name] then reclaim(now) end
    run_timers(now)
    return fn(now, args)
  end)
end

for i = 1, #COMMANDS, 2 do register(COMMANDS[i], COMMANDS[i + 1]) end

-- ------------------------------------------------------------------ admin transfer
--[[
For `beanstalk-py admin export/import/migrate --store` (beanstalk_py/admin/
storexfer.py), added after the commands and kept apart from them.

Export is read-only ('no-writes': callable with FCALL_RO, also on a replica)
and runs no timers: a job is shown as the timers would leave it (a reserved
job as ready, a delayed job whose time has come as ready).  bs_export_jobs
walks the job keys with SCAN, a bounded chunk per call, so a big store never
blocks Redis for long; SCAN returns every key that exists from the first call
to the last at least once (possibly twice, when the keyspace is rehashed
between calls: the exporter drops repeats by id).  Each job is read
atomically, in the state of the call that returned it: with front ends
running this is an at-least-once copy, as export --binlog is.

Import writes, and like every command first runs the due timers.
bs_import_begin checks (unless merging) that the store holds no job and raises
the id counter past the largest id about to be imported, before any job is
written, so that a put on a running front end can never take one of them;
bs_import_jobs then writes a chunk (checked whole before its first write).
]]

-- bs_export_meta(now) -> {now, id counter, bury seq, tube, pause us, unpause_at us, ...}: the paused tubes.
local function export_meta(now, a)
  local out = {now, num(redis.call('GET', K_ID)), num(redis.call('GET', K_BSEQ))}
  local tubes = redis.call('ZRANGE', K_TUBES, 0, -1)
  for i = 1, #tubes do
    local f = redis.call('HMGET', P .. 't:' .. tubes[i], 'pause', 'unpause_at')
    if num(f[1]) ~= 0 and num(f[2]) > now then
      out[#out + 1] = tubes[i]
      out[#out + 1] = num(f[1])
      out[#out + 1] = num(f[2])
    end
  end
  return out
end

-- bs_export_jobs(now, cursor, count) -> {next cursor ('0': done), now, then per job:
-- id, tube, state (ready|delayed|buried), pri, delay left us, ttr, bury seq, body}.
local EXPORT_STATE = {ready = 'ready', reserved = 'ready', delayed = 'delayed', buried = 'buried'}
local function export_jobs(now, a)
  local r = redis.call('SCAN', a[2], 'MATCH', P .. 'j:*', 'COUNT', tonumber(a[3]) or 1000)
  local out = {r[1], now}
  local keys = r[2]
  local skip = #P + 3
  for i = 1, #keys do
    local s = redis.call('GET', keys[i])
    if s then
      local j = unpack(s)
      local state, left = EXPORT_STATE[j[J_STATE]] or 'ready', 0
      if state == 'delayed' then
        left = j[J_DEADLINE] - now
        if left <= 0 then state, left = 'ready', 0 end
      end
      out[#out + 1] = keys[i]:sub(skip)
      out[#out + 1] = j[J_TUBE]
      out[#out + 1] = state
      out[#out + 1] = j[J_PRI]
      out[#out + 1] = left
      out[#out + 1] = j[J_TTR]
      out[#out + 1] = state == 'buried' and j[J_BSEQ] or 0
      out[#out + 1] = j[J_BODY]
    end
  end
  return out
end

-- bs_import_begin(now, merge 0|1, max id) -> {jobs already in the store, bury seq}
-- | error NOTEMPTY (nothing written).
local function import_begin(now, a)
  local merge, max_id = a[2] == '1', tonumber(a[3])
  if not max_id then return redis.error_reply('ERR bad import_begin arguments') end
  local c = redis.call('HMGET', K_C, 'ready', 'delayed', 'buried', 'reserved')
  local held = num(c[1]) + num(c[2]) + num(c[3]) + num(c[4])
  if held > 0 and not merge then
    return redis.error_reply('NOTEMPTY the store holds ' .. string.format('%d', held) .. ' jobs')
  end
  tube_make('default')
  if num(redis.call('GET', K_ID)) < max_id then redis.call('SET', K_ID, string.format('%d', max_id)) end
  return {held, num(redis.call('GET', K_BSEQ))}
end

-- bs_import_jobs(now, new ids 0|1, bury base, then per job: id ('' for a new
-- one), tube, state, pri, delay us, ttr, bury seq, body) -> {imported, skipped}.
-- A job whose id is in the store already is skipped (a re-run after an
-- interruption, with --merge, writes only what is missing).
local IMPORT_STATES = {ready = true, delayed = true, buried = true}
local function import_jobs(now, a)
  local new_ids, base = a[2] == '1', tonumber(a[3])
  if not base or (#a - 3) % 8 ~= 0 then return redis.error_reply('ERR bad import_jobs arguments') end
  for i = 4, #a, 8 do
    if (a[i] ~= '' and not tonumber(a[i])) or a[i + 1] == '' or not IMPORT_STATES[a[i + 2]]
        or not tonumber(a[i + 3]) or not tonumber(a[i + 4]) or not tonumber(a[i + 5]) or not tonumber(a[i + 6]) then
      return redis.error_reply('ERR bad job in import_jobs arguments at ' .. i)
    end
  end
  local imported, skipped, max_id, max_bseq = 0, 0, 0, 0
  for i = 4, #a, 8 do
    local id = tonumber(a[i])
    if new_ids or id == nil then id = redis.call('INCR', K_ID) end
    if redis.call('EXISTS', P .. 'j:' .. id) == 1 then
      skipped = skipped + 1
    else
      local tube, state, pri, left, ttr = a[i + 1], a[i + 2], tonumber(a[i + 3]), tonumber(a[i + 4]), tonumber(a[i + 5])
      if ttr < 1 then ttr = 1 end
      tube_make(tube)
      local j = {tube, pri, 0, ttr, now, state, '', 0, '', 0, 0, 0, 0, 0, a[i + 7], 0, 0}
      if state == 'delayed' and left > 0 then
        j[J_DELAY] = math.ceil(left / US)
        j[J_DEADLINE] = now + left
        redis.call('ZADD', P .. 'd:' .. tube, j[J_DEADLINE], pad(id))
        j[J_TIMER] = add_timer(j[J_DEADLINE], 'd', id)
        redis.call('HINCRBY', K_C, 'delayed', 1)
        job_set(id, j)
      elseif state == 'buried' then
        j[J_STATE] = 'buried'
        j[J_BSEQ] = base + tonumber(a[i + 6])
        if j[J_BSEQ] > max_bseq then max_bseq = j[J_BSEQ] end
        redis.call('ZADD', P .. 'b:' .. tube, j[J_BSEQ], pad(id))
        redis.call('HINCRBY', K_C, 'buried', 1)
        job_set(id, j)
      else
        make_ready(id, j)
        job_set(id, j)
        dispatch(tube, now)
      end
      imported = imported + 1
    end
    if id > max_id then max_id = id end
  end
  if num(redis.call('GET', K_ID)) < max_id then redis.call('SET', K_ID, string.format('%d', max_id)) end
  if num(redis.call('GET', K_BSEQ)) < max_bseq then redis.call('SET', K_BSEQ, string.format('%d', max_bseq)) end
  return {imported, skipped}
end

-- bs_import_pauses(now, tube, left us, ...) -> pauses set: each tube that
-- exists is paused until now + left (one that does not exist is left alone:
-- beanstalkd keeps no empty, unwatched tube).
local function import_pauses(now, a)
  local set = 0
  for i = 2, #a - 1, 2 do
    local tube, left = a[i], tonumber(a[i + 1])
    if left and left > 0 and tube_exists(tube) then
      local tkey = P .. 't:' .. tube
      del_timer(redis.call('HGET', tkey, 'ptimer'))
      local at = now + left
      redis.call('HSET', tkey, 'pause', math.ceil(left / US) * US, 'unpause_at', at,
                 'ptimer', add_timer(at, 'u', tube))
      set = set + 1
    end
  end
  return set
end

register('import_begin', import_begin)
register('import_jobs', import_jobs)
register('import_pauses', import_pauses)
local READ_ONLY = {'export_meta', export_meta, 'export_jobs', export_jobs}
for i = 1, #READ_ONLY, 2 do
  local fn = READ_ONLY[i + 1]
  redis.register_function{function_name = 'bs_' .. READ_ONLY[i], flags = {'no-writes'},
    callback = function(keys, args) return fn(clock(args[1]), args) end}
end
