// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title Stayput consortium ledger (EVM backend)
/// @notice Holds the same records as the embedded ledger, in the same
/// canonical encoding (records v2), and enforces the same rules at write
/// time. Each record arrives as its canonical signed bytes; the contract
/// parses them, checks the rules against its state and `block.timestamp`,
/// and emits `Recorded` with the bytes, so every reader rebuilds and
/// re-verifies the same history. `msg.sender` must be the writer's
/// registered account; an identical record is never accepted twice. The
/// ledger's identity is the chain id and this contract's address
/// (`ledgerId`); task requests must name it. Ed25519 signatures cannot be
/// checked on the EVM: writers check before sending, and readers replay
/// every event through the rules and set aside (quarantine) any record
/// that fails, naming its writer's account. Compiled for paris (no PUSH0),
/// which FISCO BCOS and every current EVM chain run.
contract StayputLedger {
    uint8 private constant MEMBER = 1;
    uint8 private constant DATASET_VERSION = 2;
    uint8 private constant GRANT = 3;
    uint8 private constant REVOKE_GRANT = 4;
    uint8 private constant TASK = 5;
    uint8 private constant TASK_STATUS = 6;
    uint8 private constant USE = 7;
    uint8 private constant RESULT = 8;
    uint8 private constant ROTATE_KEY = 9;
    uint8 private constant SHARD_USE = 10; // a use by one shard of a task run as shards
    uint8 private constant DISPUTE = 11;
    uint8 private constant DISPUTE_RULING = 12;

    uint256 private constant MAX_REQUEST_BYTES = 16 * 1024 + 64 * 1024;
    uint256 private constant MAX_PARAMS_BYTES = 16 * 1024;
    uint256 private constant REQUEST_WINDOW_SECS = 300;
    uint256 private constant MAX_BATCH = 256;

    uint8 private constant KIND_PSI = 1;
    uint8 private constant KIND_BLACKLIST = 3;
    uint256 private constant MAX_SEALED_ID_BYTES = 1024;
    uint256 private constant MAX_DISPUTE_SECS = 180 * 86400;
    uint8 private constant FILED = 0;
    uint8 private constant UNDER_REVIEW = 1;
    uint8 private constant UPHELD = 2;
    uint8 private constant OVERTURNED = 3;
    uint8 private constant PSI_TO_BOTH_TYPE = 10; // the first byte of PSI parameters delivered to both
    uint8 private constant PSI_SHARDED_TYPE = 11; // the first byte of PSI parameters run as shards
    uint256 private constant MAX_SHARDS = 256;
    bytes private constant SHARD_DIGESTS_LABEL = "stayput/psi/shard-digests/v1";

    uint8 private constant ROLE_DATA_OWNER = 1;
    uint8 private constant ROLE_REQUESTER = 2;
    uint8 private constant ROLE_OPERATOR = 3;
    uint8 private constant ROLE_ARBITRATOR = 6;

    uint8 private constant SUBMITTED = 0;
    uint8 private constant RUNNING = 1;
    uint8 private constant SUCCEEDED = 2;
    uint8 private constant FAILED = 3;
    uint8 private constant CANCELLED = 4;

    struct Member {
        address account;
        uint256 roles; // bit (1 << role code)
        bytes32 signingKey; // ed25519 public key
        bool exists;
    }

    struct Dataset {
        string owner;
        uint32 version;
    }

    struct Grant {
        string dataset;
        string grantee;
        uint256 computations; // bit (1 << computation code)
        uint32 maxUses;
        uint32 uses;
        uint64 maxItems;
        uint64 maxItemsPerUse;
        uint64 items;
        uint64 expiresAt;
        uint32 epsilonBudget; // milli-epsilon; 0: no differential privacy
        uint32 epsilonSpent;
        bool revoked;
        bool exists;
    }

    struct Task {
        string requester;
        string receiver;
        uint8 kind;
        uint8 status;
        bool exists;
        bool hasResult;
        bool toBoth; // PSI to both: the owner of its dataset records its own result too
        bool hasPeerResult;
        uint32 shards; // shard pairs it runs as (1: one session)
        string[] datasets;
        string[] grants;
    }

    struct DisputeRec {
        string dataset;
        bytes8 tag;
        string arbitrator;
        uint64 deadline;
        uint8 state;
        bool exists;
    }

    /// What a parsed task request holds that the rules read.
    struct Request {
        string requester;
        uint8 kind;
        string[] datasets;
        string receiver;
        uint64 issuedAt;
        bytes32 ledger;
        bytes32 digest; // SHA-256 of the signed request
        bool toBoth;
        uint32 shards; // 0: a sharded type with a count out of range
    }

    mapping(bytes32 => Member) private members;
    mapping(bytes32 => Dataset) private datasets;
    mapping(bytes32 => Grant) private grants;
    mapping(bytes32 => Task) private tasks;
    mapping(bytes32 => bool) private seen;
    mapping(bytes32 => bool) private used; // (task, grant, writer) that recorded a use
    mapping(bytes32 => bool) private usedShard; // (task, grant, writer, shard) that recorded a use
    mapping(bytes32 => uint64) private taskItems; // (task, grant, writer): items of its shards' uses
    mapping(bytes32 => DisputeRec) private disputes;
    mapping(bytes32 => uint64) private disputedUntil; // (dataset, tag): deadline of its open dispute
    mapping(bytes32 => uint256) private blacklistGrants; // (dataset, grantee): live grants allowing blacklist
    address public immutable deployer;
    uint256 public memberCount;
    uint64 public recordCount;

    /// One event per record: its sequence number, the id it is about
    /// (org, dataset, grant or task), its hash and its canonical bytes.
    event Recorded(uint64 indexed seq, bytes32 indexed subject, bytes32 recordHash, bytes signedRecord);

    error Malformed(string reason);
    error WrongAccount(string writer);
    error UnknownWriter(string writer);
    error BadGenesis();
    error NotOperator(string writer, string kind);
    error MissingRole(string org, uint8 role);
    error NotOwner(string writer, string owner, string dataset);
    error NotTaskParty(string writer, string task, string requester);
    error NotReceiver(string writer, string task, string receiver);
    error Unknown(string what, string id);
    error Duplicate(string what, string id);
    error VersionOutOfOrder(string dataset, uint32 current, uint32 got);
    error EmptyGrant(string grant);
    error Revoked(string grant);
    error Expired(string grant, uint64 expiresAt, uint64 now_);
    error UsesExhausted(string grant, uint32 maxUses);
    error ItemsExhausted(string grant, uint64 maxItems, uint64 used, uint64 asked);
    error ItemsPerUseExceeded(string grant, uint64 maxItemsPerUse, uint64 asked);
    error EpsilonExhausted(string grant, uint32 budget, uint32 spent, uint32 asked);
    error GrantMismatch(string grant, string task, string problem);
    error IllegalTransition(string task, uint8 from, uint8 to);
    error TaskNotActive(string task, uint8 status);
    error Replayed(bytes32 recordHash);
    error KeyChangeByOperator(string writer, string org);
    error Suspended(string org);
    error BadKeyRotation(string org, string problem);
    error BadTaskRequest(string task, string problem);
    error StaleTaskRequest(string task, uint64 issuedAt, uint64 now_);
    error DuplicateUse(string task, string grant, string writer);
    error DuplicateShardUse(string task, string grant, string writer, uint32 shard);
    error ShardMismatch(string task, string problem);
    error ShardResult(string task, string problem);
    error DisputeRefused(string dispute, string problem);
    error NotArbitrator(string writer, string dispute, string arbitrator);
    error IllegalDisputeTransition(string dispute, uint8 from, uint8 to);
    error DisputeDeadlinePassed(string dispute, uint64 deadline, uint64 now_);
    error WrongReceiver(string task, string receiver, string expected);
    error DuplicateResult(string task, string receiver);

    // ---- Canonical decoding (little-endian, u32 length prefixes) ----

    struct Cursor {
        bytes data;
        uint256 pos;
    }

    function _take(Cursor memory c, uint256 n) private pure returns (uint256 start) {
        if (c.pos + n > c.data.length) revert Malformed("truncated");
        start = c.pos;
        c.pos += n;
    }

    function _u8(Cursor memory c) private pure returns (uint8) {
        return uint8(c.data[_take(c, 1)]);
    }

    function _uint(Cursor memory c, uint256 n) private pure returns (uint256 v) {
        uint256 start = _take(c, n);
        for (uint256 i = 0; i < n; i++) {
            v |= uint256(uint8(c.data[start + i])) << (8 * i);
        }
    }

    function _bytes(Cursor memory c, uint256 n) private pure returns (bytes memory out) {
        uint256 start = _take(c, n);
        out = new bytes(n);
        for (uint256 i = 0; i < n; i++) {
            out[i] = c.data[start + i];
        }
    }

    function _str(Cursor memory c) private pure returns (string memory) {
        uint256 len = _uint(c, 4);
        if (len > 4096) revert Malformed("field too long");
        return string(_bytes(c, len));
    }

    function _count(Cursor memory c) private pure returns (uint256 n) {
        n = _uint(c, 4);
        if (n > 1024) revert Malformed("list too long");
    }

    function _strs(Cursor memory c) private pure returns (string[] memory items) {
        items = new string[](_count(c));
        for (uint256 i = 0; i < items.length; i++) {
            items[i] = _str(c);
        }
    }

    function _computation(Cursor memory c) private pure returns (uint8 code) {
        code = _u8(c);
        if (code < 1 || code > 6) revert Malformed("unknown computation");
    }

    function _key(string memory id) private pure returns (bytes32) {
        return keccak256(bytes(id));
    }

    function _eq(string memory a, string memory b) private pure returns (bool) {
        return _key(a) == _key(b);
    }

    /// SHA-256 of `len` bytes of `data` from `start`, without copying them.
    function _slice(bytes memory data, uint256 start, uint256 len) private pure returns (bytes memory out) {
        out = new bytes(len);
        for (uint256 i = 0; i < len; i++) {
            out[i] = data[start + i];
        }
    }

    function _sha256Slice(bytes memory data, uint256 start, uint256 len) private view returns (bytes32 h) {
        assembly {
            if iszero(staticcall(gas(), 0x02, add(add(data, 32), start), len, 0x00, 0x20)) { revert(0, 0) }
            h := mload(0x00)
        }
    }

    /// The block's time in seconds: FISCO BCOS stamps blocks in milliseconds.
    function _now() private view returns (uint64) {
        uint256 t = block.timestamp;
        return uint64(t > 100_000_000_000 ? t / 1000 : t);
    }

    /// `v` as 8 little-endian bytes.
    function _le64(uint64 v) private pure returns (bytes memory out) {
        out = new bytes(8);
        for (uint256 i = 0; i < 8; i++) {
            out[i] = bytes1(uint8(v >> (8 * i)));
        }
    }

    /// The task id of a request: "t-" and 24 hex digits of its SHA-256.
    function _taskId(bytes32 digest) private pure returns (string memory) {
        bytes memory hexDigits = "0123456789abcdef";
        bytes memory out = new bytes(26);
        out[0] = "t";
        out[1] = "-";
        for (uint256 i = 0; i < 12; i++) {
            uint8 b = uint8(digest[i]);
            out[2 + 2 * i] = hexDigits[b >> 4];
            out[3 + 2 * i] = hexDigits[b & 15];
        }
        return string(out);
    }

    // ---- Writes ----

    /// The deployer's account writes the genesis record (the operator
    /// admitting itself) with `submit`, once the ledger's id is known.
    constructor() {
        deployer = msg.sender;
    }

    /// The ledger's identity: SHA-256 of "stayput/ledger/id/v2/evm", the
    /// chain id (8 bytes, little-endian) and this contract's address.
    function ledgerId() public view returns (bytes32) {
        return sha256(abi.encodePacked("stayput/ledger/id/v2/evm", _le64(uint64(block.chainid)), address(this)));
    }

    /// Appends one record after checking the rules; reverts with the refusal otherwise.
    /// @param signedRecord the canonical signed record (writer, record, ed25519 signature)
    /// @param account for a member record: the admitted organisation's account; otherwise ignored
    function submit(bytes calldata signedRecord, address account) external returns (uint64 seq) {
        return _submit(signedRecord, account);
    }

    /// Appends several records of one writer's account in order, all or
    /// none: one transaction carries many records.
    /// @param signedRecords the canonical signed records
    /// @param accounts for each member record, the admitted organisation's account
    function submitBatch(bytes[] calldata signedRecords, address[] calldata accounts)
        external
        returns (uint64 first)
    {
        if (signedRecords.length == 0 || signedRecords.length > MAX_BATCH || accounts.length != signedRecords.length) {
            revert Malformed("a batch holds 1 to 256 records and one account per record");
        }
        first = recordCount;
        for (uint256 i = 0; i < signedRecords.length; i++) {
            _submit(signedRecords[i], accounts[i]);
        }
    }

    function _submit(bytes memory signedRecord, address account) private returns (uint64 seq) {
        Cursor memory c = Cursor(signedRecord, 0);
        if (uint32(_uint(c, 4)) != 0x025253ff) revert Malformed("not a records-v2 encoding");
        string memory writer = _str(c);
        uint8 kind = _u8(c);
        bytes32 subject;
        bytes32 recordHash = sha256(abi.encodePacked(bytes1(0x00), signedRecord));
        if (memberCount == 0) {
            if (kind != MEMBER || msg.sender != deployer) revert BadGenesis();
        } else {
            Member storage w = members[_key(writer)];
            if (!w.exists) revert UnknownWriter(writer);
            if (w.account != msg.sender) revert WrongAccount(writer);
            if (w.roles == 0) revert Suspended(writer);
        }
        if (seen[recordHash]) revert Replayed(recordHash);
        if (kind == MEMBER) subject = _member(c, writer, account);
        else if (kind == DATASET_VERSION) subject = _datasetVersion(c, writer);
        else if (kind == GRANT) subject = _grant(c, writer);
        else if (kind == REVOKE_GRANT) subject = _revoke(c, writer);
        else if (kind == TASK) subject = _task(c, writer);
        else if (kind == TASK_STATUS) subject = _taskStatus(c, writer);
        else if (kind == USE || kind == SHARD_USE) subject = _use(c, writer, kind == SHARD_USE);
        else if (kind == RESULT) subject = _result(c, writer);
        else if (kind == ROTATE_KEY) subject = _rotateKey(c, writer);
        else if (kind == DISPUTE) subject = _dispute(c, writer);
        else if (kind == DISPUTE_RULING) subject = _disputeRuling(c, writer);
        else revert Malformed("unknown record kind");
        _take(c, 64); // the writer's ed25519 signature
        if (c.pos != signedRecord.length) revert Malformed("trailing bytes");
        seen[recordHash] = true;
        seq = recordCount++;
        emit Recorded(seq, subject, recordHash, signedRecord);
    }

    function _isOperator(string memory org) private view returns (bool) {
        Member storage m = members[_key(org)];
        return m.exists && (m.roles & (1 << ROLE_OPERATOR)) != 0;
    }

    function _requireRole(string memory org, uint8 role) private view {
        Member storage m = members[_key(org)];
        if (!m.exists) revert Unknown("member", org);
        if ((m.roles & (1 << role)) == 0) revert MissingRole(org, role);
    }

    function _ownerOf(string memory dataset) private view returns (string memory) {
        Dataset storage d = datasets[_key(dataset)];
        if (d.version == 0) revert Unknown("dataset", dataset);
        return d.owner;
    }

    function _requireOwner(string memory writer, string memory dataset) private view {
        string memory owner = _ownerOf(dataset);
        if (!_eq(owner, writer)) revert NotOwner(writer, owner, dataset);
    }

    function _member(Cursor memory c, string memory writer, address account) private returns (bytes32) {
        string memory org = _str(c);
        _str(c); // name
        uint256 n = _count(c);
        uint256 roles;
        for (uint256 i = 0; i < n; i++) {
            uint8 role = _u8(c);
            if (role < 1 || role > 6) revert Malformed("unknown role");
            roles |= 1 << role;
        }
        bytes32 signingKey = bytes32(_bytes(c, 32));
        _str(c); // endpoint
        if (memberCount == 0) {
            if (!_eq(org, writer) || (roles & (1 << ROLE_OPERATOR)) == 0) revert BadGenesis();
            account = msg.sender;
        } else if (!_isOperator(writer)) {
            revert NotOperator(writer, "member");
        }
        Member storage m = members[_key(org)];
        if (m.exists) {
            // Roles, name and endpoint change; the key and the account stay.
            if (m.signingKey != signingKey) revert KeyChangeByOperator(writer, org);
        } else {
            if (account == address(0)) revert Malformed("a member needs an account");
            memberCount++;
            m.account = account;
            m.signingKey = signingKey;
            m.exists = true;
        }
        m.roles = roles;
        return _key(org);
    }

    function _rotateKey(Cursor memory c, string memory writer) private returns (bytes32) {
        bytes32 newKey = bytes32(_bytes(c, 32));
        Member storage m = members[_key(writer)];
        if (m.signingKey == newKey) revert BadKeyRotation(writer, "it is the current key");
        m.signingKey = newKey;
        return _key(writer);
    }

    function _datasetVersion(Cursor memory c, string memory writer) private returns (bytes32) {
        string memory dataset = _str(c);
        string memory owner = _str(c);
        uint32 version = uint32(_uint(c, 4));
        _take(c, 64); // schema and content digests
        uint8 hasKey = _u8(c);
        if (hasKey == 1) {
            uint256 keyLen = _uint(c, 4);
            if (keyLen > 4096) revert Malformed("field too long");
            _take(c, keyLen);
        } else if (hasKey != 0) {
            revert Malformed("option tag");
        }
        if (!_eq(owner, writer)) revert NotOwner(writer, owner, dataset);
        _requireRole(writer, ROLE_DATA_OWNER);
        Dataset storage d = datasets[_key(dataset)];
        if (d.version != 0 && !_eq(d.owner, writer)) revert NotOwner(writer, d.owner, dataset);
        if (version != d.version + 1) revert VersionOutOfOrder(dataset, d.version, version);
        d.owner = owner;
        d.version = version;
        return _key(dataset);
    }

    function _grant(Cursor memory c, string memory writer) private returns (bytes32) {
        string memory id = _str(c);
        Grant storage g = grants[_key(id)];
        string memory dataset = _str(c);
        string memory grantee = _str(c);
        uint256 n = _count(c);
        uint256 computations;
        for (uint256 i = 0; i < n; i++) {
            computations |= 1 << _computation(c);
        }
        _strs(c); // columns
        _take(c, 4); // min cohort
        uint32 maxUses = uint32(_uint(c, 4));
        uint64 maxItems = uint64(_uint(c, 8));
        uint64 maxItemsPerUse = uint64(_uint(c, 8));
        uint64 expiresAt = uint64(_uint(c, 8));
        uint32 epsilonBudget = uint32(_uint(c, 4));
        _requireOwner(writer, dataset);
        if (g.exists) revert Duplicate("grant", id);
        if (!members[_key(grantee)].exists) revert Unknown("member", grantee);
        if (n == 0) revert EmptyGrant(id);
        g.dataset = dataset;
        g.grantee = grantee;
        g.computations = computations;
        g.maxUses = maxUses;
        g.maxItems = maxItems;
        g.maxItemsPerUse = maxItemsPerUse;
        g.expiresAt = expiresAt;
        g.epsilonBudget = epsilonBudget;
        g.exists = true;
        if ((computations & (1 << KIND_BLACKLIST)) != 0) blacklistGrants[keccak256(abi.encode(dataset, grantee))] += 1;
        return _key(id);
    }

    function _liveGrant(string memory id) private view returns (Grant storage g) {
        g = grants[_key(id)];
        if (!g.exists) revert Unknown("grant", id);
        if (g.revoked) revert Revoked(id);
        if (_now() >= g.expiresAt) revert Expired(id, g.expiresAt, _now());
    }

    function _revoke(Cursor memory c, string memory writer) private returns (bytes32) {
        string memory id = _str(c);
        Grant storage g = grants[_key(id)];
        if (!g.exists) revert Unknown("grant", id);
        _requireOwner(writer, g.dataset);
        if (g.revoked) revert Revoked(id);
        g.revoked = true;
        if ((g.computations & (1 << KIND_BLACKLIST)) != 0) blacklistGrants[keccak256(abi.encode(g.dataset, g.grantee))] -= 1;
        return _key(id);
    }

    /// A dispute is filed by a member holding a blacklist grant on the
    /// dataset, about a version it has, to an arbitrator who is a party to
    /// neither side, with a deadline within 180 days, and not about an
    /// entry already under dispute.
    function _dispute(Cursor memory c, string memory writer) private returns (bytes32) {
        string memory id = _str(c);
        string memory dataset = _str(c);
        uint32 version = uint32(_uint(c, 4));
        bytes8 tag = bytes8(_bytes(c, 8));
        uint256 sealedLen = _uint(c, 4);
        if (sealedLen > MAX_SEALED_ID_BYTES) revert Malformed("field too long");
        _take(c, sealedLen);
        string memory arbitrator = _str(c);
        _take(c, 32); // evidence digest
        uint64 deadline = uint64(_uint(c, 8));
        DisputeRec storage d = disputes[_key(id)];
        if (d.exists) revert Duplicate("dispute", id);
        string memory owner = _ownerOf(dataset);
        if (version == 0 || version > datasets[_key(dataset)].version) {
            revert DisputeRefused(id, "it names a version the dataset does not have");
        }
        if (blacklistGrants[keccak256(abi.encode(dataset, writer))] == 0) {
            revert DisputeRefused(id, "its filer holds no blacklist grant on the dataset");
        }
        _requireRole(arbitrator, ROLE_ARBITRATOR);
        if (_eq(arbitrator, owner) || _eq(arbitrator, writer)) revert DisputeRefused(id, "its arbitrator is a party to it");
        uint64 now_ = _now();
        if (deadline <= now_ || deadline - now_ > MAX_DISPUTE_SECS) {
            revert DisputeRefused(id, "its deadline is not within 180 days from now");
        }
        if (sealedLen == 0) revert DisputeRefused(id, "it carries no sealed id for the arbitrator");
        // A dispute its arbitrator let lapse no longer holds the entry.
        bytes32 tagKey = keccak256(abi.encode(dataset, tag));
        if (disputedUntil[tagKey] > now_) revert DisputeRefused(id, "the entry is under dispute already");
        disputedUntil[tagKey] = deadline;
        d.dataset = dataset;
        d.tag = tag;
        d.arbitrator = arbitrator;
        d.deadline = deadline;
        d.state = FILED;
        d.exists = true;
        return _key(id);
    }

    /// Its arbitrator takes a dispute up, then upholds or overturns the
    /// listing before the deadline.
    function _disputeRuling(Cursor memory c, string memory writer) private returns (bytes32) {
        string memory id = _str(c);
        uint8 next = _u8(c);
        if (next > OVERTURNED) revert Malformed("unknown dispute state");
        DisputeRec storage d = disputes[_key(id)];
        if (!d.exists) revert Unknown("dispute", id);
        if (!_eq(writer, d.arbitrator)) revert NotArbitrator(writer, id, d.arbitrator);
        uint8 cur = d.state;
        bool legal = (cur == FILED && next == UNDER_REVIEW)
            || (cur == UNDER_REVIEW && (next == UPHELD || next == OVERTURNED));
        if (!legal) revert IllegalDisputeTransition(id, cur, next);
        uint64 now_ = _now();
        if (next != UNDER_REVIEW && now_ >= d.deadline) revert DisputeDeadlinePassed(id, d.deadline, now_);
        d.state = next;
        if (next != UNDER_REVIEW) disputedUntil[keccak256(abi.encode(d.dataset, d.tag))] = 0;
        return _key(id);
    }

    /// Parses the signed task request nested at the cursor.
    function _request(Cursor memory c) private view returns (Request memory q) {
        uint256 len = _uint(c, 4);
        if (len > MAX_REQUEST_BYTES) revert Malformed("task request too long");
        uint256 start = c.pos;
        q.requester = _str(c);
        q.kind = _computation(c);
        q.datasets = _strs(c);
        q.receiver = _str(c);
        uint256 paramsLen = _uint(c, 4);
        if (paramsLen > MAX_PARAMS_BYTES) revert Malformed("task parameters too long");
        uint256 params = _take(c, paramsLen + 16); // parameters and nonce
        q.toBoth = q.kind == KIND_PSI && paramsLen > 0 && uint8(c.data[params]) == PSI_TO_BOTH_TYPE;
        q.shards = 1;
        if (q.kind == KIND_PSI && paramsLen > 0 && uint8(c.data[params]) == PSI_SHARDED_TYPE) {
            uint256 count = 0;
            if (paramsLen >= 6) {
                for (uint256 i = 0; i < 4; i++) {
                    count |= uint256(uint8(c.data[params + 2 + i])) << (8 * i);
                }
            }
            q.shards = count >= 2 && count <= MAX_SHARDS ? uint32(count) : 0;
        }
        q.issuedAt = uint64(_uint(c, 8));
        q.ledger = bytes32(_bytes(c, 32));
        _take(c, 64); // the requester's ed25519 signature
        if (c.pos != start + len) revert Malformed("task request length");
        q.digest = _sha256Slice(c.data, start, len);
    }

    function _task(Cursor memory c, string memory writer) private returns (bytes32) {
        string memory id = _str(c);
        string[] memory gs = _strs(c);
        Request memory q = _request(c);
        string memory requester = q.requester;
        uint8 kind = q.kind;
        string[] memory ds = q.datasets;
        if (!_eq(_taskId(q.digest), id)) revert BadTaskRequest(id, "the request gives another task id");
        if (q.ledger != ledgerId()) revert BadTaskRequest(id, "it was signed for another ledger");
        uint64 now_ = _now();
        uint256 drift = now_ > q.issuedAt ? now_ - q.issuedAt : q.issuedAt - now_;
        if (drift > REQUEST_WINDOW_SECS) revert StaleTaskRequest(id, q.issuedAt, now_);
        if (q.shards == 0) revert BadTaskRequest(id, "a sharded task runs as 2 to 256 shards");
        Task storage t = tasks[_key(id)];
        if (t.exists) revert Duplicate("task", id);
        if (!_eq(writer, requester) && !_isOperator(writer)) revert NotTaskParty(writer, id, requester);
        _requireRole(requester, ROLE_REQUESTER);
        for (uint256 i = 0; i < ds.length; i++) {
            _ownerOf(ds[i]);
        }
        for (uint256 i = 0; i < gs.length; i++) {
            Grant storage g = grants[_key(gs[i])];
            if (!g.exists) revert Unknown("grant", gs[i]);
            if (!_eq(g.grantee, requester)) revert GrantMismatch(gs[i], id, "not the requester's");
            bool listed = false;
            for (uint256 j = 0; j < ds.length; j++) {
                if (_eq(ds[j], g.dataset)) listed = true;
            }
            if (!listed) revert GrantMismatch(gs[i], id, "for a dataset the task does not read");
            if ((g.computations & (1 << kind)) == 0) revert GrantMismatch(gs[i], id, "not for this kind of computation");
            _liveGrant(gs[i]);
        }
        t.requester = requester;
        t.receiver = q.receiver;
        t.kind = kind;
        t.status = SUBMITTED;
        t.exists = true;
        t.toBoth = q.toBoth;
        t.shards = q.shards;
        for (uint256 i = 0; i < ds.length; i++) t.datasets.push(ds[i]);
        for (uint256 i = 0; i < gs.length; i++) t.grants.push(gs[i]);
        return _key(id);
    }

    function _existingTask(string memory id) private view returns (Task storage t) {
        t = tasks[_key(id)];
        if (!t.exists) revert Unknown("task", id);
    }

    function _requireTaskParty(string memory writer, string memory id, Task storage t) private view {
        if (!_eq(writer, t.requester) && !_isOperator(writer)) revert NotTaskParty(writer, id, t.requester);
    }

    function _taskStatus(Cursor memory c, string memory writer) private returns (bytes32) {
        string memory id = _str(c);
        uint8 next = _u8(c);
        if (next > CANCELLED) revert Malformed("unknown status");
        Task storage t = _existingTask(id);
        _requireTaskParty(writer, id, t);
        uint8 cur = t.status;
        bool legal = (cur == SUBMITTED && (next == RUNNING || next == FAILED || next == CANCELLED))
            || (cur == RUNNING && (next == SUCCEEDED || next == FAILED));
        if (!legal) revert IllegalTransition(id, cur, next);
        t.status = next;
        return _key(id);
    }

    function _use(Cursor memory c, string memory writer, bool sharded) private returns (bytes32) {
        string memory taskId = _str(c);
        string memory grantId = _str(c);
        uint64 items = uint64(_uint(c, 8));
        uint32 epsilon = uint32(_uint(c, 4));
        uint32 shard = sharded ? uint32(_uint(c, 4)) : 0;
        Task storage t = _existingTask(taskId);
        Grant storage g = grants[_key(grantId)];
        if (!g.exists) revert Unknown("grant", grantId);
        _requireOwner(writer, g.dataset);
        bool listed = false;
        for (uint256 i = 0; i < t.grants.length; i++) {
            if (_eq(t.grants[i], grantId)) listed = true;
        }
        if (!listed) revert GrantMismatch(grantId, taskId, "not listed");
        if (t.status != SUBMITTED && t.status != RUNNING) revert TaskNotActive(taskId, t.status);
        // A task run as shards is served by each of the owner's shards
        // under one use of the grant: the first shard's record counts the
        // use, and all its shards' items together stay within one use.
        if (t.shards == 1 && sharded) {
            revert ShardMismatch(taskId, "the task runs as one session, and the use names a shard");
        }
        if (t.shards > 1 && !sharded) revert ShardMismatch(taskId, "the task runs as shards, and the use names none");
        if (sharded && shard >= t.shards) revert ShardMismatch(taskId, "the use names a shard beyond the task's");
        bytes32 useKey = keccak256(abi.encode(taskId, grantId, writer));
        bool first = !used[useKey];
        if (sharded) {
            bytes32 shardKey = keccak256(abi.encode(taskId, grantId, writer, shard));
            if (usedShard[shardKey]) revert DuplicateShardUse(taskId, grantId, writer, shard);
            usedShard[shardKey] = true;
        } else if (!first) {
            revert DuplicateUse(taskId, grantId, writer);
        }
        used[useKey] = true;
        _liveGrant(grantId);
        if (first && g.uses >= g.maxUses) revert UsesExhausted(grantId, g.maxUses);
        uint256 sum = uint256(taskItems[useKey]) + items;
        if (sum > g.maxItemsPerUse) {
            revert ItemsPerUseExceeded(grantId, g.maxItemsPerUse, sum > type(uint64).max ? type(uint64).max : uint64(sum));
        }
        taskItems[useKey] = uint64(sum);
        if (uint256(g.items) + items > g.maxItems) revert ItemsExhausted(grantId, g.maxItems, g.items, items);
        if (uint256(g.epsilonSpent) + epsilon > g.epsilonBudget) {
            revert EpsilonExhausted(grantId, g.epsilonBudget, g.epsilonSpent, epsilon);
        }
        if (first) g.uses += 1;
        g.items += items;
        g.epsilonSpent += epsilon;
        return _key(taskId);
    }

    function _result(Cursor memory c, string memory writer) private returns (bytes32) {
        string memory id = _str(c);
        bytes32 digest = bytes32(_bytes(c, 32));
        string memory receiver = _str(c);
        uint256 n = _count(c);
        uint256 intermediates = _take(c, 32 * n); // intermediate digests
        Task storage t = _existingTask(id);
        if (t.toBoth && !_eq(receiver, t.receiver) && _ownsADataset(receiver, t)) {
            // The peer of a PSI to both attests its own result; nobody
            // writes it for it.
            if (!_eq(writer, receiver)) revert NotReceiver(writer, id, receiver);
            if (t.hasPeerResult) revert DuplicateResult(id, receiver);
            t.hasPeerResult = true;
            return _key(id);
        }
        _requireTaskParty(writer, id, t);
        if (!_eq(receiver, t.receiver)) revert WrongReceiver(id, receiver, t.receiver);
        if (t.hasResult) revert DuplicateResult(id, receiver);
        // A sharded task's result is the union of its shards': the record
        // carries each shard's digest and their combination.
        if (t.shards > 1) {
            if (n != t.shards) revert ShardResult(id, "a task run as shards records one digest per shard");
            bytes memory joined = abi.encodePacked(SHARD_DIGESTS_LABEL, _slice(c.data, intermediates, 32 * n));
            if (sha256(joined) != digest) {
                revert ShardResult(id, "its digest is not the combination of its shards' digests");
            }
        }
        t.hasResult = true;
        return _key(id);
    }

    function _ownsADataset(string memory org, Task storage t) private view returns (bool) {
        for (uint256 i = 0; i < t.datasets.length; i++) {
            if (_eq(datasets[_key(t.datasets[i])].owner, org)) return true;
        }
        return false;
    }

    // ---- Reads (eth_call) ----

    /// A member's account and role bits.
    function member(string calldata org) external view returns (bool exists, address account, uint256 roles) {
        Member storage m = members[_key(org)];
        return (m.exists, m.account, m.roles);
    }

    /// What has been consumed of a grant.
    function grantUsage(string calldata id)
        external
        view
        returns (bool exists, uint32 uses, uint32 maxUses, uint64 items, uint64 maxItems, bool revoked)
    {
        Grant storage g = grants[_key(id)];
        return (g.exists, g.uses, g.maxUses, g.items, g.maxItems, g.revoked);
    }

    /// A task's status.
    function taskStatus(string calldata id) external view returns (bool exists, uint8 status) {
        Task storage t = tasks[_key(id)];
        return (t.exists, t.status);
    }
}
