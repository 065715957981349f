<?php
// A tiny client of our own that makes the calls the gateway's PHP SDK makes, the way it
// makes them (POST form fields built by http_build_query, which leaves out nulls; GET queries;
// the answer decoded as JSON whatever its content type; an error only when error == 1; ids and
// codes cast or typed as int). strict_types makes every typed constructor below refuse a
// string where the SDK's classes want an int, so a wrong type in an answer fails here.
//
// php dropin_client.php <base url ending in /getdata/> <token> <device id>
// Prints one JSON object per call; exits 1 with the message when an answer is an error.

declare(strict_types=1);

final class SmsStatus
{
    public function __construct(public int $sms_id, public int $status, public string $status_description) {}
}

final class LastSeenDate
{
    public function __construct(public string $date, public int $timezone_type, public string $timezone) {}
}

final class DeviceStatus
{
    public function __construct(public LastSeenDate $lastseen, public int $device_id, public string $title) {}
}

function call(string $method, string $url, array $params): array
{
    $ch = curl_init();
    if ($method === 'GET') {
        curl_setopt($ch, CURLOPT_URL, $url . '?' . http_build_query($params));
    } else {
        curl_setopt($ch, CURLOPT_URL, $url);
        curl_setopt($ch, CURLOPT_POST, 1);
        curl_setopt($ch, CURLOPT_POSTFIELDS, http_build_query($params));
    }
    curl_setopt($ch, CURLOPT_RETURNTRANSFER, true);
    curl_setopt($ch, CURLOPT_TIMEOUT, 3);
    $body = curl_exec($ch);
    $status = curl_getinfo($ch, CURLINFO_RESPONSE_CODE);
    curl_close($ch);
    if ($body === false || $status >= 400) {
        fwrite(STDERR, "HTTP $status\n");
        exit(1);
    }
    $decoded = json_decode($body, true);
    if (isset($decoded['error']) and $decoded['error'] == 1) {
        fwrite(STDERR, ($decoded['message'] ?? 'Unknown smsgateway24 API error') . "\n");
        exit(1);
    }
    return $decoded;
}

[$_, $base, $token, $device] = $argv;
$deviceId = (int)$device;

// addSms: customerId camel-cased, nulls (timetosend) left out by http_build_query
$r = call('POST', $base . 'addsms', [
    'sendto' => '+4915752982212', 'body' => 'Your code is 4711', 'device_id' => $deviceId,
    'timetosend' => null, 'sim' => 0, 'customerId' => 12, 'urgent' => 1, 'token' => $token,
]);
$smsId = (int)$r['sms_id'];
echo json_encode(['call' => 'addSms', 'sms_id' => $smsId, 'raw_is_int' => is_int($r['sms_id'])]), "\n";

// getSmsStatus: GET query, SmsStatus(int, int, string)
$r = call('GET', $base . 'getsmsstatus', ['sms_id' => $smsId, 'token' => $token]);
$status = new SmsStatus($r['sms_id'], $r['status'], $r['status_description']);
echo json_encode(['call' => 'getSmsStatus'] + get_object_vars($status)), "\n";

// getDeviceStatus: GET query, LastSeenDate(string, int, string), device_id int, title string
$r = call('GET', $base . 'getdevicestatus', ['device_id' => $deviceId, 'token' => $token]);
$seen = new LastSeenDate($r['lastseen']['date'], $r['lastseen']['timezone_type'], $r['lastseen']['timezone']);
$device = new DeviceStatus($seen, $r['device_id'], $r['title']);
echo json_encode(['call' => 'getDeviceStatus', 'device_id' => $device->device_id,
    'title' => $device->title, 'lastseen' => get_object_vars($device->lastseen)]), "\n";

// saveTag: the SDK's return type is int
function tagId(array $r): int { return $r['tag_id']; }
$r = call('POST', $base . 'savetag', ['title' => 'Rich customers', 'token' => $token]);
echo json_encode(['call' => 'saveTag', 'tag_id' => tagId($r)]), "\n";

// a wrong token: the SDK throws with the message
$ch = curl_init($base . 'addsms');
curl_setopt($ch, CURLOPT_POSTFIELDS, http_build_query(['token' => 'wrong', 'sendto' => '1']));
curl_setopt($ch, CURLOPT_RETURNTRANSFER, true);
$wrong = json_decode((string)curl_exec($ch), true);
echo json_encode(['call' => 'wrongToken', 'http' => curl_getinfo($ch, CURLINFO_RESPONSE_CODE),
    'error' => $wrong['error'], 'message' => $wrong['message']]), "\n";
