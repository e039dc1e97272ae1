// Reads a DynamoDB table directly (signed requests with the AWS SDK's algorithm are not needed:
// dynalite accepts any signature), to check what the archive really holds.

/** Every item of `room` in `table`, oldest first, as { timestamp, payload }. */
export async function archivedItems(dynamo, table, room) {
  const items = [];
  let start;
  do {
    const res = await fetch(`http://127.0.0.1:${dynamo.port}/`, {
      method: 'POST',
      headers: {
        'Content-Type': 'application/x-amz-json-1.0',
        'X-Amz-Target': 'DynamoDB_20120810.Query',
        'X-Amz-Date': new Date().toISOString().replace(/[:-]|\.\d{3}/g, ''),
        Authorization:
          'AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/dynamodb/aws4_request, SignedHeaders=host;x-amz-date, Signature=0',
      },
      body: JSON.stringify({
        TableName: table,
        KeyConditionExpression: 'id = :r',
        ExpressionAttributeValues: { ':r': { S: room } },
        ExclusiveStartKey: start,
      }),
    });
    const body = await res.json();
    if (!res.ok) throw new Error(`Query failed: ${JSON.stringify(body)}`);
    for (const item of body.Items) {
      items.push({ timestamp: Number(item.time_created.N), payload: JSON.parse(item.payload.S), expiresAt: Number(item.expires_at?.N) });
    }
    start = body.LastEvaluatedKey;
  } while (start);
  return items;
}
