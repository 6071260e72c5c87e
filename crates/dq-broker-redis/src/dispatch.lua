-- dq's Redis dispatch script.
--
-- Python Dramatiq workers run their own script on the same keys; this one is written from the
-- semantics in WIRE.md section 2 and must have the same effect on every key, per message id, so
-- that workers of both languages can share a queue. It differs only where that is invisible to
-- Dramatiq: ids are batched (many per call), settling (ack, nack, requeue) is one command, and
-- whenever ids are added to a queue it PUBLISHes on an extra channel that dq consumers listen to
-- so they need not poll.
--
-- KEYS[1] = namespace
-- ARGV    = command, now_ms, queue, broker_id, heartbeat_timeout, dead_message_ttl,
--           maintenance ("1" or "0"), max_unpack, max_priority (0: no broker priority),
--           command arguments...
--
-- Keys (ns = namespace, Q = queue, q = Q without a trailing ".DQ"):
--   ns:Q                        list of ids, pushed at the tail, popped at the head
--   ns:Q.msgs                   hash id -> body
--   ns:q.XQ, ns:q.XQ.msgs       dead letters: zset id -> dead-lettered at, hash id -> body
--   ns:__acks__.<broker>.<Q>    set of ids fetched by that broker and not yet settled
--   ns:__heartbeats__           zset broker id -> time of its last call
--   ns:__dq_schedules__:<name>  hash of a periodic schedule: tick (the latest claimed, ms),
--                               state (JSON for tools), busy (message id), busy_until (ms)
--   ns:__dq_schedules__         zset schedule name -> when its hash expires (ms)
--   ns:__dq_unique__:<q>:<key>  string: the message_id holding unique lock <key> of queue q,
--                               expiring with the lock's TTL
--   ns:__dq_replaced__:<q>:<id> string: the message_id of the debounced message that replaced
--                               message <id> of queue q, which is to be skipped
--   ns:__dq_priority__.Q        zset id -> score of the ready ids with a broker priority
--                               (dq only; see "Broker priority" below)
--   ns:__dq_priority__.Q.seq    counter: FIFO order within a priority level
--   ns:__acks__.__dq_priority__.Q.Q
--                               the same ids, held by the pseudo-worker __dq_priority__.Q

local ns = KEYS[1]
local command = ARGV[1]
local now_arg = ARGV[2]
local now = tonumber(now_arg)
local queue = ARGV[3]
local me = ARGV[4]
local heartbeat_timeout = tonumber(ARGV[5])
local dead_message_ttl = tonumber(ARGV[6])
local maintenance = ARGV[7]
local max_unpack = tonumber(ARGV[8])
local max_priority = tonumber(ARGV[9])
local FIRST = 10

local unpack = table.unpack or unpack

local heartbeats = ns .. ':__heartbeats__'
-- Every call is a heartbeat: a broker that is fetching or settling is alive.
redis.call('zadd', heartbeats, now_arg, me)

local canonical = queue
if string.sub(queue, -3) == '.DQ' then
    -- Dead letters of a delay queue go to the canonical queue's XQ: there is no q.DQ.XQ.
    canonical = string.sub(queue, 1, -4)
end

local list = ns .. ':' .. queue
local msgs = list .. '.msgs'
local xq = ns .. ':' .. canonical .. '.XQ'
local xq_msgs = xq .. '.msgs'
local acks_prefix = ns .. ':__acks__.'
local my_acks = acks_prefix .. me .. '.' .. queue
local channel = ns .. ':__dq_notify__.' .. queue

-- Calls `cmd key items[from..to]`, in slices small enough for Lua's C stack.
local function call_sliced(cmd, key, items, from, to)
    local i = from
    while i <= to do
        local j = math.min(i + max_unpack - 1, to)
        redis.call(cmd, key, unpack(items, i, j))
        i = j + 1
    end
end

-- KEYS takes a glob; a namespace may contain glob characters.
local function glob_escape(s)
    return (string.gsub(s, '([%*%?%[%]\\])', '\\%1'))
end

local function announce(count)
    if count > 0 then
        redis.call('publish', channel, count)
    end
end

-- ==== Broker priority (dq only) ============================================================
-- A message whose options carry `broker_priority` >= 1, on a broker given a max_priority, waits
-- in the zset ns:__dq_priority__.Q instead of the list ns:Q: higher priority first, FIFO within
-- a level (score = (256 - priority) * 2^40 + sequence). Python workers never read that zset, so
-- its ids are also held in the ack set of a pseudo-worker, __dq_priority__.Q, whose heartbeat
-- dq consumers keep fresh. When no dq consumer has beaten for the heartbeat timeout, the
-- maintenance of any worker (Python's or ours) sees a dead worker and moves those ids onto the
-- list: a Python-only fleet still gets every message, without its priority. An id in the zset
-- but no longer in the pseudo ack set was recovered that way and is stale: fetch drops it.
-- Within a level, the upper half of the sequence range orders fresh messages (FIFO); the lower
-- half, counting down, holds messages given back unprocessed, ahead of the fresh ones.
-- The delay queue Q.DQ never uses the zset: its messages are ordered by eta, not priority.
local LEVEL = 1099511627776 -- 2^40: sequences below it, levels above; all exact in a double
local HALF = LEVEL / 2
local prio_queue = max_priority > 0 and string.sub(queue, -3) ~= '.DQ'
local prio_worker = '__dq_priority__.' .. queue
local prio_set = ns .. ':' .. prio_worker
local prio_seq = prio_set .. '.seq'
local prio_front = prio_set .. '.front'
local prio_acks = acks_prefix .. prio_worker .. '.' .. queue

-- The broker priority of a message body, clamped to max_priority; 0 when it has none, when
-- this queue takes no priority, or when the body is not a message (it then goes to the list,
-- and the worker that fetches it dead-letters it as undecodable).
local function priority_of(body)
    if not prio_queue or not body or not string.find(body, '"broker_priority"', 1, true) then
        return 0
    end
    local ok, message = pcall(cjson.decode, body)
    if not ok or type(message) ~= 'table' or type(message.options) ~= 'table' then
        return 0
    end
    local p = tonumber(message.options.broker_priority)
    if not p or p < 1 then
        return 0
    end
    return math.min(math.floor(p), max_priority)
end

-- Puts ready ids in the priority zset, `items` a list of {id, priority}: at the tail of their
-- levels in the order given, or, `front`, at their heads for messages given back unprocessed
-- (requeued or recovered), which were at the front when they were fetched, the first given
-- coming out first. One counter bump per call, one ZADD and SADD per slice.
local function push_prioritized(items, front)
    if #items == 0 then
        return
    end
    local total = #items
    local last = redis.call('incrby', front and prio_front or prio_seq, total)
    local per_call = math.max(1, math.floor(max_unpack / 2))
    local from = 1
    while from <= total do
        local to = math.min(from + per_call - 1, total)
        local scored, ids = {}, {}
        for k = from, to do
            local seq
            if front then
                -- Counting down from the middle of the range: the first item gets the highest
                -- counter value, so the lowest sequence.
                seq = HALF - 1 - (last - k + 1) % HALF
            else
                seq = HALF + (last - total + k) % HALF
            end
            scored[#scored + 1] = (256 - items[k][2]) * LEVEL + seq
            scored[#scored + 1] = items[k][1]
            ids[#ids + 1] = items[k][1]
        end
        redis.call('zadd', prio_set, unpack(scored))
        redis.call('sadd', prio_acks, unpack(ids))
        from = to + 1
    end
    -- NX: only a consumer's call keeps the pseudo-worker alive; a producer only makes sure it
    -- has a heartbeat, so that maintenance can ever see it dead.
    redis.call('zadd', heartbeats, 'NX', now_arg, prio_worker)
end

-- The one place ready messages go onto their queue (ids[k] with bodies[k], bodies already in
-- ns:Q.msgs): each to the priority zset or the list's tail. Every enqueue command calls it.
local function push_messages(ids, bodies)
    if not prio_queue then
        call_sliced('rpush', list, ids, 1, #ids)
        return
    end
    local plain, prioritized = {}, {}
    for k = 1, #ids do
        local p = priority_of(bodies[k])
        if p > 0 then
            prioritized[#prioritized + 1] = {ids[k], p}
        else
            plain[#plain + 1] = ids[k]
        end
    end
    call_sliced('rpush', list, plain, 1, #plain)
    push_prioritized(prioritized, false)
end

local function push_message(id, body)
    push_messages({id}, {body})
end

-- Gives back an id that was fetched and not processed (requeue, recovery of a dead dq worker):
-- any plain one to the list's tail at once, as Dramatiq does; a prioritized one is added to
-- `front`, for `to_front` to put at the head of its level. False when its body is gone
-- (settled elsewhere).
local function give_back(id, front)
    if not prio_queue then
        if redis.call('hexists', msgs, id) == 1 then
            redis.call('rpush', list, id)
            return true
        end
        return false
    end
    local body = redis.call('hget', msgs, id)
    if not body then
        return false
    end
    local p = priority_of(body)
    if p > 0 then
        front[#front + 1] = {id, p}
    else
        redis.call('rpush', list, id)
    end
    return true
end

-- Puts ids given back at the head of their levels, the first given first: the last is pushed
-- in front first.
local function to_front(front)
    push_prioritized(front, true)
end

-- A consumer's call keeps the pseudo-worker alive (XX: only when it exists), before any
-- maintenance this call runs could find it dead.
if prio_queue and (command == 'fetch' or command == 'settle' or command == 'promote') then
    redis.call('zadd', heartbeats, 'XX', now_arg, prio_worker)
end
-- ==== end of broker priority ===============================================================

-- Gives the unsettled ids of dead brokers back to this queue, forgets brokers that hold
-- nothing any more, and drops dead letters older than the TTL.
local function maintain()
    local recovered = 0
    local dead = redis.call('zrangebyscore', heartbeats, 0, now - heartbeat_timeout)
    local front = {}
    for _, broker in ipairs(dead) do
        local prefix = acks_prefix .. broker
        local held = prefix .. '.' .. queue
        local ids = redis.call('smembers', held)
        if #ids > 0 then
            for _, id in ipairs(ids) do
                -- An id whose body is gone was settled elsewhere: pushing it would only make
                -- a ghost entry. The pseudo-worker's ids go to the list (that is its point);
                -- a dead dq worker's prioritized ids go back to their level.
                if broker == prio_worker then
                    if redis.call('hexists', msgs, id) == 1 then
                        redis.call('rpush', list, id)
                        recovered = recovered + 1
                    end
                elseif give_back(id, front) then
                    recovered = recovered + 1
                end
            end
            redis.call('del', held)
        end
        if #redis.call('keys', glob_escape(prefix) .. '*') == 0 then
            redis.call('zrem', heartbeats, broker)
        end
    end
    to_front(front)
    local expired = redis.call('zrangebyscore', xq, 0, now - dead_message_ttl)
    call_sliced('zrem', xq, expired, 1, #expired)
    call_sliced('hdel', xq_msgs, expired, 1, #expired)
    announce(recovered)
end

if maintenance == '1' then
    maintain()
end

-- Unique messages: pushes one message onto this queue, for enqueue_unique, through the one
-- routing of every enqueue (a broker priority puts it in the priority zset).
local function unique_push(id, body)
    redis.call('hset', msgs, id, body)
    push_message(id, body)
    announce(1)
end

if command == 'enqueue' then
    -- ARGV[FIRST..]: id1, body1, id2, body2, ...
    local last = #ARGV
    local pairs_per_call = math.max(1, math.floor(max_unpack / 2))
    local i = FIRST
    while i < last do
        local j = math.min(i + 2 * pairs_per_call - 1, last)
        redis.call('hset', msgs, unpack(ARGV, i, j))
        local ids, bodies = {}, {}
        for k = i, j, 2 do
            ids[#ids + 1] = ARGV[k]
            bodies[#bodies + 1] = ARGV[k + 1]
        end
        push_messages(ids, bodies)
        i = j + 1
    end
    announce((last - FIRST + 1) / 2)
    return (last - FIRST + 1) / 2

elseif command == 'enqueue_tick' then
    -- ARGV[FIRST..]: schedule name, tick (ms), id, body, state JSON, no_overlap ("1"/"0"),
    -- busy ttl (ms), record ttl (ms), message_id. The claim of the tick and the enqueue of its
    -- message are this one script: a tick is enqueued once, or not at all.
    local name = ARGV[FIRST]
    local tick = tonumber(ARGV[FIRST + 1])
    local id, body, state = ARGV[FIRST + 2], ARGV[FIRST + 3], ARGV[FIRST + 4]
    local no_overlap = ARGV[FIRST + 5] == '1'
    local busy_ttl, record_ttl = tonumber(ARGV[FIRST + 6]), tonumber(ARGV[FIRST + 7])
    local message_id = ARGV[FIRST + 8]
    local index = ns .. ':__dq_schedules__'
    local key = index .. ':' .. name
    local last = tonumber(redis.call('hget', key, 'tick') or '')
    if last and last >= tick then
        return {'taken'}
    end
    redis.call('hset', key, 'tick', ARGV[FIRST + 1])
    redis.call('pexpire', key, record_ttl)
    redis.call('zadd', index, now + record_ttl, name)
    if no_overlap then
        local busy = redis.call('hget', key, 'busy')
        if busy and tonumber(redis.call('hget', key, 'busy_until') or '0') > now then
            return {'busy', busy}
        end
    end
    redis.call('hset', msgs, id, body)
    push_message(id, body)
    announce(1)
    redis.call('hset', key, 'state', state)
    if no_overlap then
        redis.call('hset', key, 'busy', message_id, 'busy_until', now + busy_ttl)
    else
        redis.call('hdel', key, 'busy', 'busy_until')
    end
    return {'enqueued'}

-- ---- unique messages: enqueue_unique, release_unique ----------------------------------------
elseif command == 'enqueue_unique' then
    -- ARGV[FIRST..]: key, message_id, ttl (ms), mode ("unique", "throttle", "debounce"), id,
    -- body. Taking the lock and pushing the message are this one script: never a lock without
    -- its message, nor a message past a held lock. A debounce takes the key from its holder,
    -- which the worker then skips when it comes up (its key holds a newer id).
    local lock = ns .. ':__dq_unique__:' .. canonical .. ':' .. ARGV[FIRST]
    local message_id = ARGV[FIRST + 1]
    local ttl, mode = ARGV[FIRST + 2], ARGV[FIRST + 3]
    local holder = redis.call('get', lock)
    if holder and (mode ~= 'debounce' or holder == message_id) then
        return {'duplicate', holder}
    end
    if holder then
        -- The replaced message is remembered as long as its own lock would have lived (it
        -- covered its delay), or this one's, whichever is longer: it is skipped when it comes
        -- up, even after this one has started and released the key.
        local mark_ttl = math.max(redis.call('pttl', lock), tonumber(ttl))
        redis.call('set', ns .. ':__dq_replaced__:' .. canonical .. ':' .. holder, message_id,
            'px', mark_ttl)
    end
    redis.call('set', lock, message_id, 'px', ttl)
    unique_push(ARGV[FIRST + 4], ARGV[FIRST + 5])
    if holder then
        return {'replaced', holder}
    end
    return {'enqueued'}

elseif command == 'release_unique' then
    -- ARGV[FIRST..]: key, message_id; queue = the canonical queue. Compare and delete.
    local lock = ns .. ':__dq_unique__:' .. canonical .. ':' .. ARGV[FIRST]
    local newer = redis.call('get', ns .. ':__dq_replaced__:' .. canonical .. ':' .. ARGV[FIRST + 1])
    if newer then
        return {'replaced', newer}
    end
    local holder = redis.call('get', lock)
    if not holder then
        return {'absent'}
    end
    if holder == ARGV[FIRST + 1] then
        redis.call('del', lock)
        return {'released'}
    end
    return {'held', holder}
-- ---- end of unique messages -------------------------------------------------------------------

elseif command == 'release_tick' then
    -- ARGV[FIRST..]: schedule name, message_id. Compare and delete.
    local key = ns .. ':__dq_schedules__:' .. ARGV[FIRST]
    if redis.call('hget', key, 'busy') == ARGV[FIRST + 1] then
        redis.call('hdel', key, 'busy', 'busy_until')
        return 1
    end
    return 0

elseif command == 'fetch' then
    -- ARGV[FIRST]: how many. Returns id1, body1, id2, body2, ... where a body may be nil: the
    -- id is then held in the ack set all the same, as Dramatiq does.
    local n = math.min(tonumber(ARGV[FIRST]), max_unpack)
    local out = {}
    -- Prioritized ids first, best first. Stale ones (recovered onto the list, see above) and
    -- ones whose body is gone (a Python purge) are dropped on the way.
    if prio_queue then
        local taken = {}
        while #taken < n do
            local ids = redis.call('zrange', prio_set, 0, n - #taken - 1)
            if #ids == 0 then
                break
            end
            redis.call('zrem', prio_set, unpack(ids))
            -- The live ones: still held by the pseudo-worker, by one SMISMEMBER and one SREM
            -- (Redis 6.2+); older servers get an SREM per id.
            local live = {}
            local held = redis.pcall('smismember', prio_acks, unpack(ids))
            if type(held) == 'table' and held.err == nil then
                for k, id in ipairs(ids) do
                    if held[k] == 1 then
                        live[#live + 1] = id
                    end
                end
                if #live > 0 then
                    redis.call('srem', prio_acks, unpack(live))
                end
            else
                for _, id in ipairs(ids) do
                    if redis.call('srem', prio_acks, id) == 1 then
                        live[#live + 1] = id
                    end
                end
            end
            if #live > 0 then
                local bodies = redis.call('hmget', msgs, unpack(live))
                for k = 1, #live do
                    if bodies[k] then
                        taken[#taken + 1] = live[k]
                        out[#out + 1] = live[k]
                        out[#out + 1] = bodies[k]
                    end
                end
            end
        end
        if #taken > 0 then
            redis.call('sadd', my_acks, unpack(taken))
        end
        n = n - #taken
        if n == 0 then
            return out
        end
    end
    -- One LPOP with a count (Redis 6.2+) instead of one per id; older servers reject the count
    -- and get the loop.
    local ids = redis.pcall('lpop', list, n)
    if type(ids) == 'table' and ids.err then
        ids = {}
        for i = 1, n do
            local id = redis.call('lpop', list)
            if not id then
                break
            end
            ids[i] = id
        end
    elseif not ids then
        ids = {}
    end
    if #ids == 0 then
        return out
    end
    redis.call('sadd', my_acks, unpack(ids))
    local bodies = redis.call('hmget', msgs, unpack(ids))
    local base = #out
    for i = 1, #ids do
        out[base + 2 * i - 1] = ids[i]
        out[base + 2 * i] = bodies[i]
    end
    return out

elseif command == 'promote' then
    -- ARGV[FIRST]: how many ids at the head of the list to look at. Moves those whose message
    -- carries a broker priority (sent by a producer that does not route them: Python's, or dq
    -- without max_priority) into the priority zset, at the tail of their level. Returns how
    -- many it moved.
    if not prio_queue then
        return 0
    end
    local ids = redis.call('lrange', list, 0, tonumber(ARGV[FIRST]) - 1)
    local promoted = {}
    local from = 1
    while from <= #ids do
        local to = math.min(from + max_unpack - 1, #ids)
        local bodies = redis.call('hmget', msgs, unpack(ids, from, to))
        for k = from, to do
            local p = priority_of(bodies[k - from + 1])
            if p > 0 and redis.call('lrem', list, 1, ids[k]) == 1 then
                promoted[#promoted + 1] = {ids[k], p}
            end
        end
        from = to + 1
    end
    push_prioritized(promoted, false)
    return #promoted

elseif command == 'settle' then
    -- ARGV[FIRST]: number of acks, ARGV[FIRST+1]: number of nacks, then the acked ids, the
    -- nacked ids, and the ids to requeue. Only ids in this broker's ack set are touched, each
    -- exactly as Dramatiq's ack, nack and requeue would.
    local n_ack = tonumber(ARGV[FIRST])
    local n_nack = tonumber(ARGV[FIRST + 1])
    local i = FIRST + 2
    local acked, nacked, requeued = 0, 0, 0
    -- Acks: which of the ids this broker holds, by one SMISMEMBER (Redis 6.2+) per slice, then
    -- one SREM and one HDEL for those; older servers get the per-id SREM / HDEL.
    local last_ack = i + n_ack - 1
    while i <= last_ack do
        local j = math.min(i + max_unpack - 1, last_ack)
        local held = redis.pcall('smismember', my_acks, unpack(ARGV, i, j))
        if type(held) == 'table' and held.err == nil then
            local mine = {}
            for k = i, j do
                if held[k - i + 1] == 1 then
                    mine[#mine + 1] = ARGV[k]
                end
            end
            if #mine > 0 then
                redis.call('srem', my_acks, unpack(mine))
                redis.call('hdel', msgs, unpack(mine))
            end
            acked = acked + #mine
        else
            for k = i, j do
                if redis.call('srem', my_acks, ARGV[k]) == 1 then
                    redis.call('hdel', msgs, ARGV[k])
                    acked = acked + 1
                end
            end
        end
        i = j + 1
    end
    for _ = 1, n_nack do
        local id = ARGV[i]
        i = i + 1
        if redis.call('srem', my_acks, id) == 1 then
            local body = redis.call('hget', msgs, id)
            if body then
                redis.call('zadd', xq, now_arg, id)
                redis.call('hset', xq_msgs, id, body)
                redis.call('hdel', msgs, id)
                nacked = nacked + 1
            end
        end
    end
    local front = {}
    while i <= #ARGV do
        local id = ARGV[i]
        i = i + 1
        if redis.call('srem', my_acks, id) == 1 and give_back(id, front) then
            requeued = requeued + 1
        end
    end
    to_front(front)
    announce(requeued)
    return {acked, nacked, requeued}

elseif command == 'purge' then
    redis.call('del', list, my_acks, msgs, xq, xq_msgs, prio_set, prio_seq, prio_front, prio_acks)
    return 1

end

return redis.error_reply('dq dispatch: unknown command ' .. tostring(command))
