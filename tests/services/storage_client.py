"""An object-storage client independent of diagmon and of the `object_store` crate, for the tests
(tests/src/storage.rs runs it with the Python of the moto virtualenv that install.sh makes).

S3 through boto3; Azure Blob through plain HTTP with SharedKey signatures (Python's standard
library only). Every command prints one JSON document on stdout. Exit status 0 on success, 3 when
the object, bucket or container does not exist, 1 on any other error (with the cause on stderr).

    storage_client.py s3-create-bucket ENDPOINT BUCKET [--key ID --secret SECRET]
    storage_client.py s3-enable-auth ENDPOINT
    storage_client.py s3-get ENDPOINT BUCKET KEY OUT [--key ID --secret SECRET]
    storage_client.py s3-list ENDPOINT BUCKET PREFIX [--key ID --secret SECRET]
    storage_client.py s3-list-uploads ENDPOINT BUCKET [--key ID --secret SECRET]
    storage_client.py az-create-container ENDPOINT ACCOUNT KEY CONTAINER
    storage_client.py az-get ENDPOINT ACCOUNT KEY CONTAINER BLOB OUT
    storage_client.py az-list ENDPOINT ACCOUNT KEY CONTAINER PREFIX
"""

import base64
import email.utils
import hashlib
import hmac
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

MISSING = 3


def s3(endpoint, key="testing", secret="testing"):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def credentials(args):
    key, secret = "testing", "testing"
    if "--key" in args:
        key = args[args.index("--key") + 1]
    if "--secret" in args:
        secret = args[args.index("--secret") + 1]
    return key, secret


def missing(error):
    code = getattr(error, "response", {}).get("Error", {}).get("Code", "")
    return code in ("NoSuchKey", "NoSuchBucket", "404")


def s3_create_bucket(endpoint, bucket, *rest):
    s3(endpoint, *credentials(rest)).create_bucket(Bucket=bucket)
    return {"created": bucket}


def s3_enable_auth(endpoint):
    """Creates an IAM user with full access and a key, then switches moto's auth on: from now on
    every request must be signed with that key."""
    import boto3

    iam = boto3.client(
        "iam",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    iam.create_user(UserName="diagmon")
    policy = iam.create_policy(
        PolicyName="everything",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
            }
        ),
    )
    iam.attach_user_policy(UserName="diagmon", PolicyArn=policy["Policy"]["Arn"])
    key = iam.create_access_key(UserName="diagmon")["AccessKey"]
    # A form-encoded body gets a 500: the body is the number of requests still allowed unsigned.
    request = urllib.request.Request(
        endpoint + "/moto-api/reset-auth",
        data=b"0",
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    urllib.request.urlopen(request).read()
    return {"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"]}


def s3_get(endpoint, bucket, key, out, *rest):
    client = s3(endpoint, *credentials(rest))
    try:
        response = client.get_object(Bucket=bucket, Key=key)
    except Exception as error:  # botocore.exceptions.ClientError
        if missing(error):
            return None
        raise
    data = response["Body"].read()
    with open(out, "wb") as f:
        f.write(data)
    return {
        "size": len(data),
        "content_type": response.get("ContentType"),
        "metadata": response.get("Metadata", {}),
    }


def s3_list(endpoint, bucket, prefix, *rest):
    response = s3(endpoint, *credentials(rest)).list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [item["Key"] for item in response.get("Contents", [])]


def s3_list_uploads(endpoint, bucket, *rest):
    response = s3(endpoint, *credentials(rest)).list_multipart_uploads(Bucket=bucket)
    return [upload["Key"] for upload in response.get("Uploads", [])]


def azure(method, endpoint, account, key, path, query=None, headers=None, body=b""):
    """One SharedKey-signed request to the Blob service at ENDPOINT (`http://host:port/account`)."""
    query = query or {}
    headers = dict(headers or {})
    headers["x-ms-date"] = email.utils.formatdate(usegmt=True)
    headers["x-ms-version"] = "2021-08-06"
    url_path = urllib.parse.urlparse(endpoint).path.rstrip("/") + path
    length = str(len(body)) if body else ""
    canonical_headers = "".join(
        f"{name}:{headers[name]}\n" for name in sorted(h for h in headers if h.startswith("x-ms-"))
    )
    canonical_resource = f"/{account}{urllib.parse.quote(url_path)}" + "".join(
        f"\n{name}:{query[name]}" for name in sorted(query)
    )
    string_to_sign = "\n".join(
        [method, "", "", length, "", headers.get("Content-Type", ""), "", "", "", "", "", ""]
    ) + "\n" + canonical_headers + canonical_resource
    signature = base64.b64encode(
        hmac.new(base64.b64decode(key), string_to_sign.encode(), hashlib.sha256).digest()
    ).decode()
    headers["Authorization"] = f"SharedKey {account}:{signature}"
    url = endpoint.rstrip("/") + urllib.parse.quote(path)
    if query:
        url += "?" + urllib.parse.urlencode(query)
    request = urllib.request.Request(url, data=body or None, method=method, headers=headers)
    return urllib.request.urlopen(request)


def az_create_container(endpoint, account, key, container):
    try:
        azure("PUT", endpoint, account, key, f"/{container}", {"restype": "container"}).read()
    except urllib.error.HTTPError as error:
        if error.code != 409:  # exists already
            raise
    return {"created": container}


def az_get(endpoint, account, key, container, blob, out):
    try:
        response = azure("GET", endpoint, account, key, f"/{container}/{blob}")
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise
    data = response.read()
    with open(out, "wb") as f:
        f.write(data)
    metadata = {
        name[len("x-ms-meta-"):]: value
        for name, value in response.headers.items()
        if name.lower().startswith("x-ms-meta-")
    }
    return {
        "size": len(data),
        "content_type": response.headers.get("Content-Type"),
        "metadata": metadata,
    }


def az_list(endpoint, account, key, container, prefix):
    """Blob names under PREFIX, committed or not (`uncommitted` lists blobs that only have
    uncommitted blocks: an unfinished upload)."""
    query = {"restype": "container", "comp": "list", "prefix": prefix, "include": "uncommittedblobs"}
    try:
        text = azure("GET", endpoint, account, key, f"/{container}", query).read()
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise
    root = ET.fromstring(text)
    return [blob.findtext("Name") for blob in root.iter("Blob")]


COMMANDS = {
    "s3-create-bucket": s3_create_bucket,
    "s3-enable-auth": s3_enable_auth,
    "s3-get": s3_get,
    "s3-list": s3_list,
    "s3-list-uploads": s3_list_uploads,
    "az-create-container": az_create_container,
    "az-get": az_get,
    "az-list": az_list,
}


def main(argv):
    if len(argv) < 2 or argv[1] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        return 2
    result = COMMANDS[argv[1]](*argv[2:])
    print(json.dumps(result))
    return MISSING if result is None else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
